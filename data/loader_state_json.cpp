#include "data/loader_state_json.h"

#include "data/data_error.h"

namespace liger::data {

namespace {

// json[key] as a non-negative integer, or a DataError naming the key.
int64_t non_negative_integer(const nlohmann::json& json, const char* key) {
  const auto it = json.find(key);
  if (it == json.end() || !it->is_number_integer() || it->get<int64_t>() < 0) {
    throw DataError(std::string("data loader state: \"") + key +
                    "\" must be a non-negative integer (got " +
                    (it == json.end() ? std::string("nothing") : it->dump()) + " in " +
                    json.dump() + "); the checkpoint's loader state is damaged");
  }
  return it->get<int64_t>();
}

}  // namespace

nlohmann::json loader_state_to_json(const LoaderState& state) {
  return nlohmann::json{{"epoch", state.epoch}, {"position", state.position}};
}

LoaderState loader_state_from_json(const nlohmann::json& json) {
  if (!json.is_object()) {
    throw DataError(
        "data loader state: expected a JSON object {\"epoch\": ..., \"position\": ...}, got " +
        json.dump());
  }
  return {non_negative_integer(json, "epoch"), non_negative_integer(json, "position")};
}

void to_json(nlohmann::json& json, const LoaderState& state) {
  json = loader_state_to_json(state);
}
void from_json(const nlohmann::json& json, LoaderState& state) {
  state = loader_state_from_json(json);
}

}  // namespace liger::data
