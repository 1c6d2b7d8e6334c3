#include "trainer/logging/protobuf_wire.h"

#include <cstring>

namespace liger::log {

void append_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void ProtoMessage::add_key(int field, int wire_type) {
  append_varint(bytes_, (static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire_type));
}

void ProtoMessage::add_little_endian(uint64_t value, int byte_count) {
  for (int i = 0; i < byte_count; ++i)
    bytes_.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

ProtoMessage& ProtoMessage::add_varint(int field, uint64_t value) {
  add_key(field, 0);
  append_varint(bytes_, value);
  return *this;
}

ProtoMessage& ProtoMessage::add_double(int field, double value) {
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);  // the IEEE-754 binary64 bits
  add_key(field, 1);
  add_little_endian(bits, 8);
  return *this;
}

ProtoMessage& ProtoMessage::add_float(int field, float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);  // the IEEE-754 binary32 bits
  add_key(field, 5);
  add_little_endian(bits, 4);
  return *this;
}

ProtoMessage& ProtoMessage::add_bytes(int field, const std::string& bytes) {
  add_key(field, 2);
  append_varint(bytes_, bytes.size());
  bytes_ += bytes;
  return *this;
}

ProtoMessage& ProtoMessage::add_message(int field, const ProtoMessage& message) {
  return add_bytes(field, message.bytes());
}

}  // namespace liger::log
