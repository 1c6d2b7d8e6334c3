#include "models/safetensors.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace liger::models::safetensors {
namespace {

// The format caps the header at 100 MB (HF's reader refuses larger ones).
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

struct DtypeEntry {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeEntry kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

std::string known_dtypes() {
  std::string out;
  for (const auto& e : kDtypes) out += std::string(out.empty() ? "" : ", ") + e.name;
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw ModelIoError(path + ": " + what);
}

}  // namespace

std::string dtype_name(at::ScalarType dtype) {
  for (const auto& e : kDtypes) {
    if (e.type == dtype) return e.name;
  }
  throw ModelIoError(std::string("safetensors: cannot store dtype ") + c10::toString(dtype) +
                     " (supported: " + known_dtypes() + ")");
}

at::ScalarType scalar_type(const std::string& name, const std::string& context) {
  for (const auto& e : kDtypes) {
    if (name == e.name) return e.type;
  }
  throw ModelIoError(context + ": dtype '" + name + "' is not supported (supported: " +
                     known_dtypes() + "); convert the checkpoint to F32, BF16 or F16");
}

File::File(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path, std::string("cannot open (") + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail(path, "is not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  try {
    if (size_ < 8) {
      fail(path, "truncated: " + std::to_string(size_) +
                     " bytes, but a safetensors file starts with an 8-byte header length");
    }
    map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (map_ == MAP_FAILED) {
      map_ = nullptr;
      fail(path, std::string("cannot map the file (") + std::strerror(errno) + ")");
    }
    const auto* bytes = static_cast<const uint8_t*>(map_);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian
    if (header_len > kMaxHeaderBytes || header_len > size_ - 8) {
      fail(path, "header length " + std::to_string(header_len) + " does not fit in the file of " +
                     std::to_string(size_) + " bytes: the file is truncated or not safetensors");
    }
    const uint64_t data_size = size_ - 8 - header_len;
    data_ = bytes + 8 + header_len;

    nlohmann::json header;
    try {
      header = nlohmann::json::parse(reinterpret_cast<const char*>(bytes + 8),
                                     reinterpret_cast<const char*>(bytes + 8 + header_len));
    } catch (const nlohmann::json::exception& error) {
      std::string message = error.what();
      fail(path, "the header is not valid JSON (" + message.substr(0, message.find('\n')) +
                     "): the file is truncated or not safetensors");
    }
    if (!header.is_object()) fail(path, "the header is not a JSON object: not a safetensors file");

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const nlohmann::json& entry = it.value();
      if (name == "__metadata__") {
        if (!entry.is_object()) fail(path, "__metadata__ is not an object of strings");
        for (auto m = entry.begin(); m != entry.end(); ++m) {
          if (m.value().is_string()) metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const std::string where = "tensor '" + name + "'";
      if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
          !entry.contains("data_offsets") || !entry["dtype"].is_string() ||
          !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
          entry["data_offsets"].size() != 2) {
        fail(path, where +
                       ": the header entry needs dtype (string), shape (list) and "
                       "data_offsets ([begin, end])");
      }
      TensorInfo info;
      info.name = name;
      info.dtype = entry["dtype"].get<std::string>();
      const at::ScalarType type = scalar_type(info.dtype, path + ": " + where);
      uint64_t numel = 1;
      for (const auto& dim : entry["shape"]) {
        if (!dim.is_number_unsigned() && !(dim.is_number_integer() && dim.get<int64_t>() >= 0)) {
          fail(path,
               where + ": shape " + entry["shape"].dump() + " has a non-integer or negative size");
        }
        const uint64_t size = dim.get<uint64_t>();
        if (size > static_cast<uint64_t>(INT64_MAX) ||
            __builtin_mul_overflow(numel, size, &numel)) {
          fail(path, where + ": shape " + entry["shape"].dump() + " is too large");
        }
        info.shape.push_back(static_cast<int64_t>(size));
      }
      for (const auto& offset : entry["data_offsets"]) {
        if (!offset.is_number_unsigned() &&
            !(offset.is_number_integer() && offset.get<int64_t>() >= 0)) {
          fail(path, where + ": data_offsets " + entry["data_offsets"].dump() +
                         " must be non-negative integers");
        }
      }
      info.begin = entry["data_offsets"][0].get<uint64_t>();
      info.end = entry["data_offsets"][1].get<uint64_t>();
      uint64_t nbytes = 0;
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(type)), &nbytes)) {
        fail(path, where + ": shape " + shape_text(info.shape) + " is too large");
      }
      if (info.begin > info.end) {
        fail(path, where + ": data_offsets [" + std::to_string(info.begin) + ", " +
                       std::to_string(info.end) + "] end before they begin");
      }
      if (info.end > data_size) {
        fail(path, where + ": data_offsets [" + std::to_string(info.begin) + ", " +
                       std::to_string(info.end) + "] reach past the end of the data (" +
                       std::to_string(data_size) + " bytes): the file is truncated");
      }
      if (info.end - info.begin != nbytes) {
        fail(path, where + ": data_offsets [" + std::to_string(info.begin) + ", " +
                       std::to_string(info.end) + "] hold " +
                       std::to_string(info.end - info.begin) + " bytes but " + info.dtype + " " +
                       shape_text(info.shape) + " needs " + std::to_string(nbytes));
      }
      tensors_.push_back(std::move(info));
    }
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (i > 0 && tensors_[i].begin < tensors_[i - 1].end) {
        fail(path, "tensor '" + tensors_[i].name + "': data_offsets overlap those of '" +
                       tensors_[i - 1].name + "'");
      }
      index_[tensors_[i].name] = i;
    }
  } catch (...) {
    if (map_ != nullptr) ::munmap(map_, size_);
    map_ = nullptr;
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

File::~File() {
  if (map_ != nullptr) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo* File::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

at::Tensor File::view(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) fail(path_, "has no tensor '" + name + "'");
  const at::ScalarType type = scalar_type(info->dtype, path_ + ": tensor '" + name + "'");
  const uint8_t* ptr = data_ + info->begin;
  const auto options = at::TensorOptions().dtype(type).device(at::kCPU);
  if (reinterpret_cast<uintptr_t>(ptr) % c10::elementSize(type) == 0) {
    // The mapping is read-only: the tensor must never be written (callers copy from it).
    return at::from_blob(const_cast<uint8_t*>(ptr), info->shape, options);
  }
  at::Tensor copy = at::empty(info->shape, options);  // unaligned data: an aligned copy
  std::memcpy(copy.data_ptr(), ptr, info->end - info->begin);
  return copy;
}

at::Tensor File::read(const std::string& name) const {
  return view(name).clone();
}

void write(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
           std::map<std::string, std::string> metadata) {
  if (metadata.find("format") == metadata.end()) metadata["format"] = "pt";
  std::vector<at::Tensor> host;  // contiguous CPU copies, in order
  nlohmann::ordered_json header;
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || name.empty()) {
      throw ModelIoError(path + ": cannot store a tensor named '" + name + "'");
    }
    if (header.contains(name)) throw ModelIoError(path + ": tensor '" + name + "' is given twice");
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    host.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad: the data starts 8-byte aligned
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw ModelIoError(tmp + ": cannot create the file (does the folder exist?)");
    uint8_t length[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(n >> (8 * i));  // little-endian
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : host) {
      out.write(static_cast<const char*>(t.data_ptr()),
                static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      throw ModelIoError(tmp + ": write failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw ModelIoError(path + ": cannot move the written file into place");
  }
}

}  // namespace liger::models::safetensors
