// The Protocol Buffers wire format, encoding only, for the few field kinds a
// TensorBoard event needs (trainer/logging/tensorboard_writer.h). A message
// is its fields one after the other; each field is a key, (field number << 3)
// | wire type, as a varint, then its value:
//   wire type 0  a varint (int64, int32, enum, bool)
//   wire type 1  8 bytes, little endian (double)
//   wire type 2  a varint byte count, then the bytes (string, bytes, message)
//   wire type 5  4 bytes, little endian (float)
// A varint is 7 bits per byte, least significant group first, the high bit
// set on every byte but the last.
#pragma once

#include <cstdint>
#include <string>

namespace liger::log {

void append_varint(std::string& out, uint64_t value);

class ProtoMessage {
 public:
  // int64, int32 and enums; a negative value is its two's complement (10 bytes).
  ProtoMessage& add_varint(int field, uint64_t value);
  ProtoMessage& add_double(int field, double value);
  ProtoMessage& add_float(int field, float value);
  ProtoMessage& add_bytes(int field, const std::string& bytes);  // string or bytes
  ProtoMessage& add_message(int field, const ProtoMessage& message);

  // The encoded message.
  const std::string& bytes() const { return bytes_; }

 private:
  void add_key(int field, int wire_type);
  void add_little_endian(uint64_t value, int byte_count);

  std::string bytes_;
};

}  // namespace liger::log
