#include "trainer/file_util.h"

#include <ftw.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace liger::trainer {
namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  return std::remove(path) == 0 ? 0 : -1;
}

}  // namespace

void remove_tree(const std::string& path) {
  // Depth first (FTW_DEPTH) so that a directory is emptied before it goes;
  // FTW_PHYS: never follow symbolic links out of the tree.
  if (::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
    throw std::runtime_error("cannot remove " + path + ": " + std::strerror(errno));
  }
}

}  // namespace liger::trainer
