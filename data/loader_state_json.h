// LoaderState <-> JSON, for checkpoints: {"epoch": 3, "position": 17}.
#pragma once

#include "data/loader.h"

#include <nlohmann/json.hpp>

namespace liger::data {

nlohmann::json loader_state_to_json(const LoaderState& state);
// DataError naming the key when "epoch" or "position" is missing, not an
// integer, or negative.
LoaderState loader_state_from_json(const nlohmann::json& json);

// nlohmann's hooks, so `nlohmann::json j = state;` and `j.get<LoaderState>()` work.
void to_json(nlohmann::json& json, const LoaderState& state);
void from_json(const nlohmann::json& json, LoaderState& state);

}  // namespace liger::data
