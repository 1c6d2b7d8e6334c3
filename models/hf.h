// Hugging Face interop: a model folder (config.json + *.safetensors, single
// or sharded with model.safetensors.index.json) in and out.
//
//   ModelConfig c = read_hf_config(dir);             // family + dims + traits
//   Transformer m(c, kernels, options, dtype);
//   load_hf_weights(*m, dir);                        // converted to the param dtype
//   save_hf_model(*m, out_dir, {});                  // what from_pretrained loads
//
// Supported architectures: LlamaForCausalLM, MistralForCausalLM,
// GemmaForCausalLM, Gemma2ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM.
// Anything this transformer would compute differently from HF (biases other
// than Qwen2's on q, k and v, other activations or RoPE scalings, irregular
// sliding-window layouts) is rejected with a ModelIoError naming
// the file, the key and the value: never a silently different model.
#pragma once

#include "models/model_config.h"
#include "models/safetensors.h"
#include "models/transformer.h"

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace liger::models {

// The architectures (HF class names) we read and write.
const std::vector<std::string>& hf_architectures();

// Parses DIR/config.json. ModelIoError on anything unsupported or missing.
ModelConfig read_hf_config(const std::string& dir);
// Same from config.json text; `origin` names it in messages.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& origin);

// config.json text for `config` with the given storage dtype. Throws
// ModelIoError when a trait has no expression in the family's HF config
// (e.g. a sliding window on a Llama), since HF would load another model.
std::string hf_config_json(const ModelConfig& config, at::ScalarType dtype);

// DIR's safetensors, mapped and checked against `model`'s parameters up
// front: every parameter present with its shape and a loadable dtype
// (F32/BF16/F16), and no tensor the model would not use (ModelIoError naming
// the file and the tensor otherwise). Only names and shapes of the model are
// read, so it may live on the meta device: a sharded rank copies just its
// rows of each parameter out of the mapped files, without the whole model in
// host memory.
class HfWeights {
 public:
  HfWeights(const TransformerImpl& model, const std::string& dir);
  ~HfWeights();
  HfWeights(const HfWeights&) = delete;
  HfWeights& operator=(const HfWeights&) = delete;
  // Parameter `name` as a CPU tensor over the mapped bytes, in the stored
  // dtype; valid while this object lives (copy_() it where it belongs).
  at::Tensor view(const std::string& name) const;

 private:
  std::map<std::string, std::unique_ptr<safetensors::File>> open_;
  std::map<std::string, std::string> file_of_param_;
};

// Copies every parameter from DIR's safetensors into `model` (converting
// F32/BF16/F16 to the parameter dtype and device). A missing tensor, a shape
// that disagrees with the config, an unsupported dtype or a tensor the model
// does not have is a ModelIoError naming the file and the tensor.
void load_hf_weights(TransformerImpl& model, const std::string& dir);

struct HfExportOptions {
  // Storage dtype; Undefined = the model's compute dtype.
  at::ScalarType dtype = at::ScalarType::Undefined;
  // Past this many bytes of tensors the weights are split into
  // model-0000i-of-0000n.safetensors + model.safetensors.index.json.
  int64_t max_shard_bytes = 5LL * 1024 * 1024 * 1024;
};

// Writes DIR/config.json and the safetensors (creating DIR). The tied
// lm_head is not written (HF ties it on load).
void save_hf_model(const TransformerImpl& model, const std::string& dir,
                   const HfExportOptions& options = {});

}  // namespace liger::models
