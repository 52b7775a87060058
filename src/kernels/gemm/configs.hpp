// The one map from the public names (GemmTile, GemmFormat) to the configuration and format structs.
#pragma once

#include <string>
#include <type_traits>

#include "kernels/moe_gemm.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::kernels::gemm {

// Calls f(Cfg{}) with the configuration struct of `tile`. Auto names none (choose_gemm resolves it).
template <class F>
auto with_config(GemmTile tile, F&& f) {
  switch (tile) {
    case GemmTile::Tiny: return f(GemmTiny{});
    case GemmTile::Decode: return f(GemmDecode{});
    case GemmTile::Small: return f(GemmSmall{});
    case GemmTile::Medium: return f(GemmMedium{});
    case GemmTile::Prefill: return f(GemmPrefill{});
    case GemmTile::Wgmma: return f(GemmWgmma{});
    case GemmTile::WgmmaNarrow: return f(GemmWgmmaNarrow{});
    case GemmTile::WgmmaSmall: return f(GemmWgmmaSmall{});
    case GemmTile::Auto: break;
  }
  fail(ErrorCode::InvalidArgument, std::string("GEMM tile '") + gemm_tile_name(tile) + "' names no configuration");
}

// Calls f(Cfg{}) for every configuration.
template <class F>
void for_each_config(F&& f) {
  f(GemmTiny{});
  f(GemmDecode{});
  f(GemmSmall{});
  f(GemmMedium{});
  f(GemmPrefill{});
  f(GemmWgmma{});
  f(GemmWgmmaNarrow{});
  f(GemmWgmmaSmall{});
}

// Whether a configuration runs the warpgroup-MMA kernel (it says kWgmma = true) or the mma.sync one.
template <class Cfg, class = void>
struct UsesWgmma : std::false_type {};
template <class Cfg>
struct UsesWgmma<Cfg, std::void_t<decltype(Cfg::kWgmma)>> : std::bool_constant<Cfg::kWgmma> {};

// Whether a configuration may split GEMM1's K (it says kSplitGateUp = true; gemm1_k_splits): its
// GEMM1 then also runs the GateUpPartial stage.
template <class Cfg, class = void>
struct SplitsGateUp : std::false_type {};
template <class Cfg>
struct SplitsGateUp<Cfg, std::void_t<decltype(Cfg::kSplitGateUp)>> : std::bool_constant<Cfg::kSplitGateUp> {};

}  // namespace mxmoe::kernels::gemm
