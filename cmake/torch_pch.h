// Precompiled header shared by every torch-facing target (see liger_use_pch).
#pragma once
#include <torch/torch.h>
