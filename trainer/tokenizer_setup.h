// The run's tokenizer, as the config names it: data.tokenizer (model.hf_path's
// folder when data.tokenizer is '': trainer/config.cpp resolves that), with
// data.bos_token / data.eos_token over the special tokens the folder declares.
#pragma once

#include "data/tokenizer.h"
#include "trainer/config.h"

#include <memory>

namespace liger::trainer {

// Loads the tokenizer (data::DataError on a user error) and logs where it and
// the chat template of data.chat_template = auto come from; warns when
// data.add_bos disagrees with what the tokenizer's own files say.
std::unique_ptr<data::Tokenizer> load_run_tokenizer(const config::TrainConfig& config);

}  // namespace liger::trainer
