// Our own reader and writer of the safetensors format (what Hugging Face
// checkpoints ship in):
//
//   [8 bytes: N, little-endian u64] [N bytes: JSON header] [raw tensor data]
//
// The header maps each tensor name to {"dtype": "BF16", "shape": [..],
// "data_offsets": [begin, end]} (offsets relative to the data section) and may
// hold "__metadata__": {string: string}. Data is little-endian, row-major.
//
// The reader maps the file (mmap) and validates the whole header up front:
// a truncated file, offsets out of bounds or overlapping, a size that does not
// match dtype x shape, or an unknown dtype is a ModelIoError whose one-line
// message names the file and the tensor. Nothing reads past the mapping.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace liger::models {

// A user error in a model file or folder (safetensors, config.json): the
// message names the file, the tensor or key, the value and the fix.
class ModelIoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace safetensors {

struct TensorInfo {
  std::string name;
  std::string dtype;  // safetensors name: F32, BF16, ...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
};

// The safetensors dtype name of a torch dtype, and back. Throw ModelIoError
// for a dtype the format (or this reader) does not know.
std::string dtype_name(at::ScalarType dtype);
at::ScalarType scalar_type(const std::string& dtype_name, const std::string& context);

class File {
 public:
  // Maps `path` and validates its header (ModelIoError on any problem).
  explicit File(const std::string& path);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  // In file order (by data offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A CPU tensor over the mapped bytes (no copy when the data is aligned for
  // its dtype, else an aligned copy). It is valid only while this File lives:
  // copy_() it where it belongs. ModelIoError if the name is not in the file.
  at::Tensor view(const std::string& name) const;
  // A CPU tensor that owns its memory.
  at::Tensor read(const std::string& name) const;

 private:
  std::string path_;
  int fd_ = -1;
  void* map_ = nullptr;
  size_t size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (any device and dtype the format knows; written as they
// are) to `path`, atomically (a temporary file renamed into place). The
// metadata gets "format": "pt" unless given, which HF's loader requires.
void write(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
           std::map<std::string, std::string> metadata = {});

}  // namespace safetensors
}  // namespace liger::models
