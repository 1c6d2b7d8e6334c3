// CRC-32C (Castagnoli), the checksum of TFRecord files: reflected
// polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace liger::log {

uint32_t crc32c(const void* data, size_t size);
inline uint32_t crc32c(const std::string& bytes) {
  return crc32c(bytes.data(), bytes.size());
}

// The CRC as TFRecord stores it: rotated right by 15 bits plus a constant, so
// that a CRC computed over bytes that themselves hold CRCs stays well mixed.
uint32_t masked_crc32c(const void* data, size_t size);

}  // namespace liger::log
