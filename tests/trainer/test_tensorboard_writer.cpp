// The TensorBoard event writer (trainer/logging/tensorboard_writer.h) piece by
// piece: CRC-32C against published check values, varints and protobuf fields
// against hand-worked bytes, and whole records and events against the bytes
// the `tensorboard` package's own code produces for the same content (made
// once with tensorboard 2.21: tensorboard.compat.proto's Event, Summary and
// TensorProto messages serialized, and its stub reader's masked_crc32c around
// a record). The end-to-end read of a training run's events by tensorboard
// itself is test_tensorboard_training.
#include "tests/catch.h"
#include "trainer/logging/crc32c.h"
#include "trainer/logging/protobuf_wire.h"
#include "trainer/logging/tensorboard_writer.h"

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace liger::log;

namespace {

std::string to_hex(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : bytes) {
    hex.push_back(digits[c >> 4]);
    hex.push_back(digits[c & 0xF]);
  }
  return hex;
}

std::string varint(uint64_t value) {
  std::string out;
  append_varint(out, value);
  return to_hex(out);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

uint64_t little_endian(const std::string& bytes, size_t pos, int count) {
  uint64_t value = 0;
  for (int i = count - 1; i >= 0; --i)
    value = (value << 8) | static_cast<unsigned char>(bytes[pos + i]);
  return value;
}

// The records of a TFRecord file, each checked against its two checksums.
std::vector<std::string> read_records(const std::string& bytes) {
  std::vector<std::string> records;
  size_t pos = 0;
  while (pos < bytes.size()) {
    REQUIRE(bytes.size() - pos >= 16);
    const uint64_t length = little_endian(bytes, pos, 8);
    REQUIRE(little_endian(bytes, pos + 8, 4) == masked_crc32c(bytes.data() + pos, 8));
    REQUIRE(bytes.size() - pos >= 16 + length);
    const std::string data = bytes.substr(pos + 12, length);
    REQUIRE(little_endian(bytes, pos + 12 + length, 4) == masked_crc32c(data.data(), data.size()));
    records.push_back(data);
    pos += 16 + length;
  }
  return records;
}

std::string fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("liger-tensorboard-test-" + std::to_string(::getpid())) / name;
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(dir)) fs::remove(entry.path());
  return dir.string();
}

}  // namespace

TEST_CASE("crc32c matches the published check values") {
  // The CRC catalogue's check value, and RFC 3720 (iSCSI) B.4's 32-byte vectors.
  CHECK(crc32c(std::string("123456789")) == 0xE3069283u);
  CHECK(crc32c(std::string()) == 0u);
  CHECK(crc32c(std::string(32, '\0')) == 0x8A9136AAu);
  CHECK(crc32c(std::string(32, '\xFF')) == 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending.push_back(static_cast<char>(i));
  CHECK(crc32c(ascending) == 0x46DD794Eu);
}

TEST_CASE("masked_crc32c rotates right by 15 bits and adds 0xa282ead8") {
  // 0xE3069283 rotated right by 15 is 0x2507C60D; + 0xa282ead8 = 0xC78AB0E5.
  CHECK(masked_crc32c("123456789", 9) == 0xC78AB0E5u);
  CHECK(masked_crc32c("", 0) == 0xA282EAD8u);
}

TEST_CASE("varints: seven bits a byte, least significant first") {
  CHECK(varint(0) == "00");
  CHECK(varint(1) == "01");
  CHECK(varint(127) == "7f");
  CHECK(varint(128) == "8001");
  CHECK(varint(300) == "ac02");
  CHECK(varint(16384) == "808001");
  CHECK(varint(UINT64_MAX) == "ffffffffffffffffff01");
  // int64 -1 as protobuf writes it: its two's complement, ten bytes
  CHECK(varint(static_cast<uint64_t>(int64_t{-1})) == "ffffffffffffffffff01");
}

TEST_CASE("protobuf fields: key, then the value in its wire type") {
  // key = field << 3 | wire type
  CHECK(to_hex(ProtoMessage().add_varint(2, 150).bytes()) == "109601");
  CHECK(to_hex(ProtoMessage().add_double(1, 1.5).bytes()) == "09000000000000f83f");
  CHECK(to_hex(ProtoMessage().add_float(2, 2.5f).bytes()) == "1500002040");
  CHECK(to_hex(ProtoMessage().add_bytes(3, "ab").bytes()) == "1a026162");
  CHECK(to_hex(ProtoMessage().add_bytes(20, "").bytes()) == "a20100");  // a two-byte key
  const ProtoMessage inner = ProtoMessage().add_varint(1, 1);
  CHECK(to_hex(ProtoMessage().add_message(7, inner).bytes()) == "3a020801");
}

TEST_CASE("a record frames its data with its length and two masked checksums") {
  CHECK(to_hex(tfrecord("abc")) == "0300000000000000b099490e6162636e57f121");
  const std::vector<std::string> records =
      read_records(tfrecord("") + tfrecord(std::string(300, 'x')));
  REQUIRE(records.size() == 2);
  CHECK(records[0].empty());
  CHECK(records[1] == std::string(300, 'x'));
}

TEST_CASE("events are the bytes tensorboard's own protobuf messages serialize to") {
  // Event(wall_time=1.5, file_version="brain.Event:2")
  CHECK(to_hex(file_version_event(1.5)) == "09000000000000f83f1a0d627261696e2e4576656e743a32");
  // Event(wall_time=1.5, step=6, session_log=SessionLog(status=START))
  CHECK(to_hex(start_event(1.5, 6)) == "09000000000000f83f10063a020801");
  // Event(wall_time=1.5, step=3, summary=Summary(value=[Value(tag="train/loss",
  // simple_value=2.5), Value(tag="train/lr", simple_value=0.001)]))
  CHECK(to_hex(scalars_event(1.5, 3, {{"train/loss", 2.5f}, {"train/lr", 0.001f}})) ==
        "09000000000000f83f10032a240a110a0a747261696e2f6c6f737315000020400a0f0a08747261696e2f6c72"
        "156f12833a");
  // Event(wall_time=1.5, step=1, summary=Summary(value=[Value(tag="config",
  //   metadata=SummaryMetadata(plugin_data=PluginData(plugin_name="text"),
  //                            data_class=DATA_CLASS_TENSOR),
  //   tensor=TensorProto(dtype=DT_STRING, tensor_shape=TensorShapeProto(),
  //                      string_val=[b"a: 1"]))]))
  CHECK(to_hex(text_event(1.5, 1, "config", "a: 1")) ==
        "09000000000000f83f10012a220a200a06636f6e666967420a080712004204613a20314a0a0a060a0474657874"
        "2002");
}

TEST_CASE("the writer appends flushed records to a new events file per writer") {
  const std::string dir = fresh_dir("writer");
  TensorBoardWriter first(dir);
  first.write_start(1);
  first.write_scalars(1, {{"train/loss", 3.25f}});
  first.write_text(1, "config", "```yaml\na: 1\n```\n");
  first.flush();
  TensorBoardWriter second(dir);  // a resumed run beside it, perhaps in the same second
  second.flush();

  const std::string name = fs::path(first.path()).filename().string();
  CHECK(name.rfind("events.out.tfevents.", 0) == 0);
  CHECK(fs::path(first.path()).parent_path() == fs::path(dir));
  CHECK(second.path() != first.path());
  // TensorBoard reads a folder's files in name order: the later file sorts last.
  CHECK(fs::path(second.path()).filename().string() > name);

  // Each record is the event with the writer's clock; past the wall time
  // (its key and 8 bytes) it is exactly the encoded event.
  const std::vector<std::string> records = read_records(read_file(first.path()));
  REQUIRE(records.size() == 4);
  const std::vector<std::string> expected = {file_version_event(0.5), start_event(0.5, 1),
                                             scalars_event(0.5, 1, {{"train/loss", 3.25f}}),
                                             text_event(0.5, 1, "config", "```yaml\na: 1\n```\n")};
  for (size_t i = 0; i < records.size(); ++i) {
    INFO("record " << i);
    REQUIRE(records[i].size() == expected[i].size());
    CHECK(records[i].substr(0, 1) == expected[i].substr(0, 1));
    CHECK(records[i].substr(9) == expected[i].substr(9));
  }
  CHECK(read_records(read_file(second.path())).size() == 1);
}

TEST_CASE("a folder the writer cannot write to is an error naming the file and the key") {
  const std::string dir = fresh_dir("missing") + "/not/there";
  try {
    TensorBoardWriter writer(dir);
    FAIL("no error");
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    CHECK(message.find(dir + "/events.out.tfevents.") != std::string::npos);
    CHECK(message.find("checkpoint.output_dir") != std::string::npos);
  }
}
