// TensorBoard event files, written without TensorFlow or a protobuf library.
//
// The file is a TFRecord file: records one after the other, each
//   uint64 length (little endian) | uint32 masked CRC-32C of those 8 bytes |
//   the data | uint32 masked CRC-32C of the data
// (trainer/logging/crc32c.h), and each record's data is one serialized
// tensorboard `Event` message (trainer/logging/protobuf_wire.h):
//   Event        1 wall_time double, 2 step int64, 3 file_version string,
//                5 summary Summary, 7 session_log SessionLog
//   SessionLog   1 status enum (START = 1)
//   Summary      1 value repeated Value
//   Value        1 tag string, 2 simple_value float, 8 tensor TensorProto,
//                9 metadata SummaryMetadata
//   SummaryMetadata  1 plugin_data {1 plugin_name string}, 4 data_class enum
//   TensorProto  1 dtype enum (DT_STRING = 7), 2 tensor_shape (empty: a
//                scalar), 8 string_val repeated bytes
// The first record says "brain.Event:2"; scalars are simple_value entries,
// text is a string tensor for the "text" plugin (Markdown).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace liger::log {

struct Scalar {
  std::string tag;  // "train/loss"
  float value;      // TensorBoard keeps scalars as float32
};

// The record framing around `data`.
std::string tfrecord(const std::string& data);

// The serialized events, for the writer below (and its tests).
std::string file_version_event(double wall_time);
std::string start_event(double wall_time, int64_t step);
std::string scalars_event(double wall_time, int64_t step, const std::vector<Scalar>& scalars);
std::string text_event(double wall_time, int64_t step, const std::string& tag,
                       const std::string& markdown);

class TensorBoardWriter {
 public:
  // Creates dir/events.out.tfevents.<unix time>.<hostname> (".1", ".2", ...
  // appended while that name exists: TensorBoard reads the files of a folder
  // in name order) and writes its first record.
  explicit TensorBoardWriter(const std::string& dir);

  // Marks that a run starts (or resumes) at `step`: TensorBoard drops what the
  // folder's earlier files hold for `step` and later, the steps a resumed run
  // replaces.
  void write_start(int64_t step);
  void write_scalars(int64_t step, const std::vector<Scalar>& scalars);
  void write_text(int64_t step, const std::string& tag, const std::string& markdown);
  // Hands what was written to the operating system: a crash after this loses nothing.
  void flush();

  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& serialized_event);

  std::string path_;
  std::ofstream file_;
};

}  // namespace liger::log
