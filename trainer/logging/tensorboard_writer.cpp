#include "trainer/logging/tensorboard_writer.h"

#include "trainer/logging/crc32c.h"
#include "trainer/logging/protobuf_wire.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>

namespace liger::log {
namespace {

// Field numbers of the messages written here (tensorboard's event.proto,
// summary.proto, tensor.proto).
namespace event {
constexpr int wall_time = 1, step = 2, file_version = 3, summary = 5, session_log = 7;
}
namespace session_log {
constexpr int status = 1;
constexpr uint64_t start = 1;
}  // namespace session_log
namespace summary {
constexpr int value = 1;
}
namespace value {
constexpr int tag = 1, simple_value = 2, tensor = 8, metadata = 9;
}
namespace metadata {
constexpr int plugin_data = 1, data_class = 4;
constexpr int plugin_name = 1;  // of PluginData
constexpr uint64_t data_class_tensor = 2;
}  // namespace metadata
namespace tensor {
constexpr int dtype = 1, tensor_shape = 2, string_val = 8;
constexpr uint64_t dt_string = 7;
}  // namespace tensor

void append_little_endian(std::string& out, uint64_t value, int byte_count) {
  for (int i = 0; i < byte_count; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

ProtoMessage event_header(double wall_time, int64_t step) {
  ProtoMessage message;
  message.add_double(event::wall_time, wall_time);
  // int64 on the wire: a negative step would be its two's complement. A zero
  // is left out, as protobuf itself writes proto3 fields.
  if (step != 0) message.add_varint(event::step, static_cast<uint64_t>(step));
  return message;
}

double now_unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The host name as a file name part ('/' and spaces would break it).
std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) != 0 || buffer[0] == '\0') return "localhost";
  std::string name = buffer;
  for (char& c : name) {
    if (c == '/' || c == ' ') c = '_';
  }
  return name;
}

}  // namespace

std::string tfrecord(const std::string& data) {
  std::string length;
  append_little_endian(length, data.size(), 8);
  std::string record = length;
  append_little_endian(record, masked_crc32c(length.data(), length.size()), 4);
  record += data;
  append_little_endian(record, masked_crc32c(data.data(), data.size()), 4);
  return record;
}

std::string file_version_event(double wall_time) {
  return event_header(wall_time, 0).add_bytes(event::file_version, "brain.Event:2").bytes();
}

std::string start_event(double wall_time, int64_t step) {
  ProtoMessage status;
  status.add_varint(session_log::status, session_log::start);
  return event_header(wall_time, step).add_message(event::session_log, status).bytes();
}

std::string scalars_event(double wall_time, int64_t step, const std::vector<Scalar>& scalars) {
  ProtoMessage values;
  for (const Scalar& scalar : scalars) {
    values.add_message(summary::value, ProtoMessage()
                                           .add_bytes(value::tag, scalar.tag)
                                           .add_float(value::simple_value, scalar.value));
  }
  return event_header(wall_time, step).add_message(event::summary, values).bytes();
}

std::string text_event(double wall_time, int64_t step, const std::string& tag,
                       const std::string& markdown) {
  ProtoMessage plugin_data;
  plugin_data.add_bytes(metadata::plugin_name, "text");
  ProtoMessage summary_metadata;
  summary_metadata.add_message(metadata::plugin_data, plugin_data)
      .add_varint(metadata::data_class, metadata::data_class_tensor);
  ProtoMessage string_tensor;  // a scalar: the shape has no dimensions
  string_tensor.add_varint(tensor::dtype, tensor::dt_string)
      .add_message(tensor::tensor_shape, ProtoMessage())
      .add_bytes(tensor::string_val, markdown);
  ProtoMessage text_value;
  text_value.add_bytes(value::tag, tag)
      .add_message(value::tensor, string_tensor)
      .add_message(value::metadata, summary_metadata);
  ProtoMessage values;
  values.add_message(summary::value, text_value);
  return event_header(wall_time, step).add_message(event::summary, values).bytes();
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  const double now = now_unix_seconds();
  const std::string base =
      (std::filesystem::path(dir) /
       ("events.out.tfevents." + std::to_string(static_cast<int64_t>(now)) + "." + host_name()))
          .string();
  path_ = base;
  for (int suffix = 1; std::filesystem::exists(path_); ++suffix)
    path_ = base + "." + std::to_string(suffix);
  file_.open(path_, std::ios::binary | std::ios::trunc);
  if (!file_) {
    throw std::runtime_error("cannot write " + path_ +
                             ": check checkpoint.output_dir (logging.tensorboard)");
  }
  write_record(file_version_event(now));
  flush();
}

void TensorBoardWriter::write_start(int64_t step) {
  write_record(start_event(now_unix_seconds(), step));
}

void TensorBoardWriter::write_scalars(int64_t step, const std::vector<Scalar>& scalars) {
  write_record(scalars_event(now_unix_seconds(), step, scalars));
}

void TensorBoardWriter::write_text(int64_t step, const std::string& tag,
                                   const std::string& markdown) {
  write_record(text_event(now_unix_seconds(), step, tag, markdown));
}

void TensorBoardWriter::flush() {
  file_.flush();
  if (!file_) throw std::runtime_error("cannot write " + path_ + ": is the disk full?");
}

void TensorBoardWriter::write_record(const std::string& serialized_event) {
  file_ << tfrecord(serialized_event);
}

}  // namespace liger::log
