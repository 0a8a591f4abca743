// The preset x dtype x head dim x GQA group grid of the decode-shape GPU tests (decode_test,
// kv_cache_test): every preset with groups 1, 4 and 8, dtype and head dim alternating so each
// preset meets bf16 and fp16, D = 64 and 128.
#pragma once

#include <string>
#include <tuple>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"

namespace attnjit {

using DecodeCase = std::tuple<std::string, ElementType, int, int>;  // preset, dtype, head dim, group (Hq / Hkv)

inline std::string decode_case_name(const DecodeCase& c) {
  return std::get<0>(c) + "_" + element_type_name(std::get<1>(c)) + "_d" + std::to_string(std::get<2>(c)) + "_g" +
         std::to_string(std::get<3>(c));
}

inline std::vector<DecodeCase> decode_cases() {
  std::vector<DecodeCase> out;
  int i = 0;
  for (const auto& p : presets::registry())
    for (const int group : {1, 4, 8}) {
      out.emplace_back(p.name, i % 2 ? ElementType::FP16 : ElementType::BF16, (i / 2) % 2 ? 128 : 64, group);
      ++i;
    }
  return out;
}

}  // namespace attnjit
