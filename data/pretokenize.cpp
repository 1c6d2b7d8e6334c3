#include "data/pretokenize.h"

#include "data/data_error.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <thread>

namespace liger::data {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// An input file, checked, with the format it is read with.
struct Input {
  std::string path;
  DataFormat format;
  int64_t bytes;
};

// Checks that every file exists and has a known format, before any work.
std::vector<Input> check_inputs(const PretokenizeOptions& options) {
  if (options.files.empty()) throw DataError("no input files given; name at least one");
  std::vector<Input> inputs;
  for (const std::string& path : options.files) {
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      throw DataError(path, 1,
                      "no such input file (relative paths are resolved against the working "
                      "directory " +
                          fs::current_path(ec).string() + ")");
    }
    if (fs::is_directory(path, ec)) {
      throw DataError(path, 1, "is a folder, not a file; name the data files themselves");
    }
    const DataFormat format =
        options.format == DataFormat::auto_detect ? detect_format(path) : options.format;
    inputs.push_back({path, format, static_cast<int64_t>(fs::file_size(path, ec))});
  }
  return inputs;
}

// Raw documents waiting to be tokenized, each with the tokenizer of its file's format.
struct Batch {
  std::vector<RawDocument> raw;
  std::vector<const DocumentTokenizer*> tokenizers;
  int64_t bytes = 0;

  void clear() {
    raw.clear();
    tokenizers.clear();
    bytes = 0;
  }
};

// Tokenizes every document of `batch` on up to `threads` threads; result i is
// raw document i. The first failure in input order is rethrown.
std::vector<Document> tokenize_batch(const Batch& batch, int threads) {
  const size_t count = batch.raw.size();
  std::vector<Document> documents(count);
  std::vector<std::exception_ptr> errors(count);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < count; i = next++) {
      try {
        documents[i] = batch.tokenizers[i]->tokenize(batch.raw[i]);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const size_t workers = std::min(static_cast<size_t>(threads), count);
  std::vector<std::thread> pool;
  for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (std::thread& thread : pool) thread.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  return documents;
}

}  // namespace

TokenBinSummary pretokenize(const Tokenizer& tokenizer, const PretokenizeOptions& options,
                            const std::string& out,
                            const std::function<void(const PretokenizeProgress&)>& progress) {
  if (options.threads < 1) {
    throw DataError("threads must be at least 1 (got " + std::to_string(options.threads) + ")");
  }
  const std::vector<Input> inputs = check_inputs(options);
  // One tokenizer per format in use; constructing it checks the special
  // tokens and resolves the chat template, so those errors come first too.
  std::map<DataFormat, std::unique_ptr<DocumentTokenizer>> tokenizers;
  PretokenizeProgress state;
  for (const Input& input : inputs) {
    state.total_bytes += input.bytes;
    if (input.format != DataFormat::tokens_bin && tokenizers.count(input.format) == 0) {
      tokenizers[input.format] =
          std::make_unique<DocumentTokenizer>(input.format, tokenizer, options.read);
    }
  }

  TokenBinWriter writer(out, tokenizer.vocab_size(), tokenizer.bos_id(), tokenizer.eos_id());
  const Clock::time_point start = Clock::now();
  auto report = [&] {
    state.tokens = writer.tokens();
    state.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (progress) progress(state);
  };
  Batch batch;
  auto flush = [&] {
    if (batch.raw.empty()) return;
    for (const Document& doc : tokenize_batch(batch, options.threads)) writer.append(doc);
    state.documents += static_cast<int64_t>(batch.raw.size());
    state.bytes_read += batch.bytes;
    batch.clear();
    report();
  };

  for (const Input& input : inputs) {
    state.file = input.path;
    if (input.format == DataFormat::tokens_bin) {
      // Already tokens: read (and split into documents) as the trainer does.
      flush();
      for_each_document(input.path, input.format, tokenizer, options.read, [&](Document&& doc) {
        writer.append(doc);
        ++state.documents;
      });
      state.bytes_read += input.bytes;
      report();
      continue;
    }
    // Batches run across files: text files are one document each.
    const DocumentTokenizer* document_tokenizer = tokenizers.at(input.format).get();
    for_each_raw_document(input.path, input.format, [&](RawDocument&& raw) {
      batch.bytes += static_cast<int64_t>(raw.text.size());
      batch.raw.push_back(std::move(raw));
      batch.tokenizers.push_back(document_tokenizer);
      if (static_cast<int64_t>(batch.raw.size()) >= options.batch_documents ||
          batch.bytes >= options.batch_bytes) {
        flush();
      }
    });
  }
  flush();
  // Blank lines and line ends are not in the raw documents: all bytes are done now.
  state.bytes_read = state.total_bytes;
  report();
  return writer.commit();
}

}  // namespace liger::data
