// Compile-only check of the forward kernel template through NVRTC with no headers and no
// include path, with the option set codegen uses. Needs no GPU.
//   nvrtc_check <repo> <arch> [--out DIR]     compile all configs (tu.hpp), print the ptxas
//                                             report per config, write DIR/<name>.cubin
//   nvrtc_check <repo> <arch> --emit NAME     print one config's translation unit
// Options validated: --gpu-architecture=<arch> -std=c++17 -default-device --dopt=on
//                    --ptxas-options=-v
#include <nvrtc.h>

#include <chrono>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "tu.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: nvrtc_check <repo> <arch> [--out DIR | --emit NAME]\n");
    return 2;
  }
  const std::string repo = argv[1], arch = argv[2];
  std::string out_dir;
  const auto cfgs = smoke::all_configs();
  if (argc >= 5 && !std::strcmp(argv[3], "--emit")) {
    for (auto& c : cfgs)
      if (c.name() == argv[4]) {
        std::fputs(smoke::make_tu(c, repo).c_str(), stdout);
        return 0;
      }
    std::fprintf(stderr, "no config %s\n", argv[4]);
    return 2;
  }
  if (argc >= 5 && !std::strcmp(argv[3], "--out")) out_dir = argv[4];
  const std::string arch_opt = "--gpu-architecture=" + arch;
  const char* opts[] = {arch_opt.c_str(), "-std=c++17", "-default-device", "--dopt=on", "--ptxas-options=-v"};
  int failures = 0, spills = 0;
  for (auto& c : cfgs) {
    const std::string src = smoke::make_tu(c, repo);
    nvrtcProgram prog;
    nvrtcCreateProgram(&prog, src.c_str(), (c.name() + ".cu").c_str(), 0, nullptr, nullptr);
    const auto t0 = std::chrono::steady_clock::now();
    const nvrtcResult r = nvrtcCompileProgram(prog, 5, opts);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    size_t n = 0;
    nvrtcGetProgramLogSize(prog, &n);
    std::string log(n, '\0');
    nvrtcGetProgramLog(prog, &log[0]);
    std::string regs = "?", spill = "?";
    {
      auto p = log.find("Used ");
      if (p != std::string::npos) regs = log.substr(p + 5, log.find(' ', p + 5) - p - 5);
      auto q = log.find("bytes spill stores");
      if (q != std::string::npos) {
        auto st = log.rfind(',', q);
        spill = log.substr(st + 2, q - st - 3);
      }
    }
    if (spill != "0" && spill != "?") ++spills;
    std::printf("%-36s %s %-7s regs=%-4s spill_st=%-4s smem=%-6d compile=%.0f ms\n", c.name().c_str(), arch.c_str(),
                r == NVRTC_SUCCESS ? "OK" : "FAILED", regs.c_str(), spill.c_str(), smoke::smem_bytes(c), ms);
    if (r != NVRTC_SUCCESS) {
      std::printf("%s\n", log.c_str());
      ++failures;
    } else if (!out_dir.empty()) {
      size_t sz = 0;
      nvrtcGetCUBINSize(prog, &sz);
      std::string bin(sz, '\0');
      nvrtcGetCUBIN(prog, &bin[0]);
      std::ofstream(out_dir + "/" + c.name() + ".cubin", std::ios::binary).write(bin.data(), sz);
    }
    nvrtcDestroyProgram(&prog);
  }
  std::printf("%d of %zu configs failed to compile, %d spill\n", failures, cfgs.size(), spills);
  return failures ? 1 : 0;
}
