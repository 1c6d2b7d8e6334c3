// The pair-weighted mean document length (kernels/document_length.h) against
// sums written out by hand: equal documents, mixed lengths, padding runs,
// several rows, ids that repeat after another document, and no tokens.
#include "kernels/document_length.h"
#include "tests/catch.h"

#include <cstdint>
#include <vector>

using liger::kernels::pair_weighted_document_length;

namespace {

// Ids for documents of the given lengths, numbered 0, 1, 2, ... in one row.
std::vector<int64_t> row_of(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> ids;
  for (size_t d = 0; d < lengths.size(); ++d) ids.insert(ids.end(), lengths[d], int64_t(d));
  return ids;
}

}  // namespace

TEST_CASE("pair-weighted document length of equal documents is their length", "[documents]") {
  for (int64_t documents : {1, 2, 8, 64}) {
    const std::vector<int64_t> ids = row_of(std::vector<int64_t>(documents, 8192 / documents));
    CHECK(pair_weighted_document_length(ids.data(), 1, 8192) == 8192 / documents);
  }
}

TEST_CASE("pair-weighted document length weighs each document by its tokens", "[documents]") {
  // lengths 1000, 24, 100: (1000^2 + 24^2 + 100^2) / 1124 = 1010576 / 1124 = 899.09
  const std::vector<int64_t> ids = row_of({1000, 24, 100});
  CHECK(pair_weighted_document_length(ids.data(), 1, 1124) == 899);
  // one long document among many short ones dominates: (4096^2 + 32 * 128^2) / 8192 = 2112
  std::vector<int64_t> lengths(33, 128);
  lengths[0] = 4096;
  const std::vector<int64_t> mixed = row_of(lengths);
  CHECK(pair_weighted_document_length(mixed.data(), 1, 8192) == 2112);
}

TEST_CASE("pair-weighted document length over rows, padding and repeated ids", "[documents]") {
  // row 0: a document of 6 and a padding run of 2; row 1: id 5 again after id 7 starts a new
  // document: runs of 2, 2, 4
  const std::vector<int64_t> ids = {0, 0, 0, 0, 0, 0, 9, 9,  //
                                    5, 5, 7, 7, 5, 5, 5, 5};
  // squares 36 + 4 | 4 + 4 + 16 = 64 over 16 tokens = 4
  CHECK(pair_weighted_document_length(ids.data(), 2, 8) == 4);
  // a run does not continue into the next row: two rows of one id are two documents of 8
  const std::vector<int64_t> same(16, 3);
  CHECK(pair_weighted_document_length(same.data(), 2, 8) == 8);
}

TEST_CASE("pair-weighted document length of no tokens is 0", "[documents]") {
  const std::vector<int64_t> none;
  CHECK(pair_weighted_document_length(none.data(), 0, 0) == 0);
  CHECK(pair_weighted_document_length(none.data(), 3, 0) == 0);
}
