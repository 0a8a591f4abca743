// Tests for runtime/kernel_cache: key stability and sensitivity, directory choice and mode,
// round trips through memory and disk, corruption detection and rebuild, and two processes
// racing to store the same key. Every test uses its own temporary cache directory.
#include "runtime/cache/kernel_cache.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "compiler/error.hpp"

namespace attnjit::runtime {
namespace {

namespace fs = std::filesystem;

CacheKeyInputs sample_inputs() {
  CacheKeyInputs inputs;
  inputs.generated_source = "extern \"C\" __global__ void k() {}";
  inputs.nvrtc_options = {"-std=c++17", "--gpu-architecture=sm_80", "-default-device"};
  inputs.nvrtc_version = "13.0";
  inputs.template_set_version = "0123456789abcdef0123456789abcdef";
  inputs.target_arch = "sm_80";
  inputs.attnjit_version = "0.1.0";
  return inputs;
}

// A fake cubin: ELF magic plus bytes derived from the tag, so entries are distinguishable.
CompiledKernel fake_kernel(const std::string& tag) {
  CompiledKernel kernel;
  kernel.cubin = std::string(
                     "\x7f"
                     "ELF",
                     4) +
                 "fake cubin " + tag + std::string(200, '\0') + "end";
  kernel.resources.kernels.push_back({"k", 42, 1024, 0, 0, 0, 1});
  kernel.compile_ms = 1.5;
  return kernel;
}

class KernelCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/attnjit-cache-test-XXXXXX";
    root_ = mkdtemp(pattern);
    dir_ = root_ / "cache";
  }
  void TearDown() override { fs::remove_all(root_); }

  KernelCache make_cache() {
    return KernelCache(KernelCacheOptions{}.set_directory(dir_).set_warning_sink(
        [this](const std::string& warning) { warnings_.push_back(warning); }));
  }

  fs::path root_, dir_;
  std::vector<std::string> warnings_;

  // Damages the stored cubin with `damage`, then checks that verify() and a lookup notice it.
  void expect_corruption_detected_and_rebuilt(const std::function<void(const fs::path&)>& damage) {
    int builds = 0;
    auto build = [&] {
      ++builds;
      return fake_kernel("a");
    };
    const std::string key = sample_inputs().key();
    make_cache().get_or_compile(sample_inputs(), build);
    damage(dir_ / (key + ".cubin"));

    auto cache = make_cache();
    const auto checks = cache.verify();
    ASSERT_EQ(checks.size(), 1u);
    EXPECT_EQ(checks[0].health, EntryHealth::Corrupt);
    EXPECT_FALSE(checks[0].problem.empty());

    const auto result = cache.get_or_compile(sample_inputs(), build);
    EXPECT_EQ(result.source, CacheSource::Compiled);
    EXPECT_EQ(builds, 2);  // rebuilt, not loaded
    EXPECT_EQ(*result.cubin, fake_kernel("a").cubin);
    ASSERT_EQ(warnings_.size(), 1u);
    EXPECT_NE(warnings_[0].find(key), std::string::npos);
    EXPECT_NE(warnings_[0].find("corrupt"), std::string::npos);

    // The rebuilt entry replaced the damaged one.
    EXPECT_EQ(cache.verify()[0].health, EntryHealth::Ok);
    EXPECT_EQ(make_cache().get_or_compile(sample_inputs(), build).source, CacheSource::DiskHit);
  }
};

TEST(CacheKey, IsStable32HexAndSensitiveToEveryInput) {
  const std::string base = sample_inputs().key();
  EXPECT_EQ(base.size(), 32u);
  EXPECT_EQ(base.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(base, sample_inputs().key());

  std::vector<std::function<void(CacheKeyInputs&)>> changes = {
      [](auto& in) { in.generated_source += " "; },
      [](auto& in) { in.nvrtc_options.push_back("-lineinfo"); },
      [](auto& in) { in.nvrtc_options[1] = "--gpu-architecture=sm_90a"; },
      [](auto& in) { in.nvrtc_version = "13.1"; },
      [](auto& in) { in.template_set_version[0] = '1'; },
      [](auto& in) { in.target_arch = "sm_90a"; },
      [](auto& in) { in.attnjit_version = "0.1.1"; },
      // Field boundaries matter: moving a character between fields changes the key.
      [](auto& in) {
        in.nvrtc_options = {"-std=c++17--gpu-architecture=sm_80", "-default-device"};
      },
  };
  for (size_t i = 0; i < changes.size(); ++i) {
    auto inputs = sample_inputs();
    changes[i](inputs);
    EXPECT_NE(inputs.key(), base) << "change " << i;
  }
}

TEST(CacheKey, ForCompileUsesThisBuildsVersions) {
  const auto inputs = CacheKeyInputs::for_compile("src", NvrtcCompileOptions{}.set_arch("sm_90a"));
  EXPECT_EQ(inputs.target_arch, "sm_90a");
  EXPECT_EQ(inputs.nvrtc_options, NvrtcCompileOptions{}.set_arch("sm_90a").nvrtc_arguments());
  EXPECT_EQ(inputs.nvrtc_version, nvrtc_version());
  EXPECT_EQ(inputs.template_set_version.size(), 32u);
  EXPECT_EQ(inputs.attnjit_version, attnjit_version());
}

TEST(CacheDirectory, FollowsTheEnvironmentInOrder) {
  struct Saved {
    const char* name;
    std::string value;
    bool had;
  };
  std::vector<Saved> saved;
  for (const char* name : {"ATTNJIT_CACHE_DIR", "XDG_CACHE_HOME", "HOME"}) {
    const char* value = getenv(name);
    saved.push_back({name, value ? value : "", value != nullptr});
  }
  setenv("ATTNJIT_CACHE_DIR", "/a/b", 1);
  setenv("XDG_CACHE_HOME", "/xdg", 1);
  setenv("HOME", "/home/u", 1);
  EXPECT_EQ(default_cache_directory(), fs::path("/a/b"));
  unsetenv("ATTNJIT_CACHE_DIR");
  EXPECT_EQ(default_cache_directory(), fs::path("/xdg/attnjit"));
  unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(default_cache_directory(), fs::path("/home/u/.cache/attnjit"));
  for (const auto& s : saved) {
    if (s.had)
      setenv(s.name, s.value.c_str(), 1);
    else
      unsetenv(s.name);
  }
  EXPECT_THROW(KernelCacheOptions{}.set_directory("relative/dir").validate(), UserError);
  EXPECT_THROW(KernelCacheOptions{}.set_directory("").validate(), UserError);
  EXPECT_NO_THROW(KernelCacheOptions{}.set_directory("").set_use_disk(false).validate());
}

TEST_F(KernelCacheTest, CreatesItsDirectoryPrivate) {
  dir_ = root_ / "nested" / "cache";
  auto cache = make_cache();
  cache.get_or_compile(sample_inputs(), [] { return fake_kernel("a"); });
  for (const auto& dir : {root_ / "nested", dir_}) {
    struct stat info {};
    ASSERT_EQ(stat(dir.c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0700u) << dir;
  }
}

TEST_F(KernelCacheTest, RoundTripsThroughMemoryAndDisk) {
  int builds = 0;
  auto build = [&] {
    ++builds;
    return fake_kernel("a");
  };
  CacheEntryLabels labels{"score + slopes[h] * (kv - q) \"quoted\"\n", "block_q=128 block_kv=64 warps=4"};
  auto cache = make_cache();
  const auto first = cache.get_or_compile(sample_inputs(), build, labels);
  EXPECT_EQ(first.source, CacheSource::Compiled);
  EXPECT_EQ(*first.cubin, fake_kernel("a").cubin);
  EXPECT_EQ(cache.get_or_compile(sample_inputs(), build).source, CacheSource::MemoryHit);

  auto other_process = make_cache();  // a fresh cache object sees only the disk
  const auto from_disk = other_process.get_or_compile(sample_inputs(), build);
  EXPECT_EQ(from_disk.source, CacheSource::DiskHit);
  EXPECT_EQ(builds, 1);
  EXPECT_EQ(*from_disk.cubin, *first.cubin);
  const auto& m = *from_disk.metadata;
  EXPECT_EQ(m.key, sample_inputs().key());
  EXPECT_EQ(m.variant_text, labels.variant_text);
  EXPECT_EQ(m.schedule_text, labels.schedule_text);
  EXPECT_EQ(m.nvrtc_options, sample_inputs().nvrtc_options);
  EXPECT_EQ(m.target_arch, "sm_80");
  EXPECT_EQ(m.cubin_size, first.cubin->size());
  ASSERT_EQ(m.resources.kernels.size(), 1u);
  EXPECT_EQ(m.resources.kernels[0].registers, 42);
  EXPECT_EQ(m.resources.kernels[0].shared_static_bytes, 1024);
  EXPECT_DOUBLE_EQ(m.compile_ms, 1.5);
  EXPECT_GT(m.created_unix_seconds, 0);

  const auto listing = cache.list();
  ASSERT_EQ(listing.size(), 1u);
  ASSERT_NE(listing[0].metadata, nullptr);
  EXPECT_EQ(listing[0].metadata->variant_text, labels.variant_text);
  EXPECT_EQ(cache.stats().entries, 1u);
  EXPECT_GT(cache.stats().bytes, first.cubin->size());
  ASSERT_EQ(cache.verify().size(), 1u);
  EXPECT_EQ(cache.verify()[0].health, EntryHealth::Ok);

  EXPECT_EQ(cache.clear(), 1u);
  EXPECT_EQ(cache.stats().entries, 0u);
  EXPECT_EQ(cache.get_or_compile(sample_inputs(), build).source, CacheSource::Compiled);
  EXPECT_EQ(builds, 2);
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(KernelCacheTest, MetadataTextOfAnyKindRoundTripsAndIsStandardJson) {
  const CacheEntryLabels labels{"a\"b \\ c\n\td \x01 e \u00e9 \u2713 \U0001D538", "block_m=128 \"x\"\\"};
  auto cache = make_cache();
  cache.get_or_compile(
      sample_inputs(), [] { return fake_kernel("a"); }, labels);
  const auto from_disk = make_cache().get_or_compile(sample_inputs(), [] { return fake_kernel("b"); });
  ASSERT_EQ(from_disk.source, CacheSource::DiskHit);
  EXPECT_EQ(from_disk.metadata->variant_text, labels.variant_text);
  EXPECT_EQ(from_disk.metadata->schedule_text, labels.schedule_text);

  std::ifstream in(dir_ / (sample_inputs().key() + ".json"));
  const nlohmann::json parsed = nlohmann::json::parse(in);
  EXPECT_EQ(parsed.at("variant_text").get<std::string>(), labels.variant_text);
  EXPECT_EQ(parsed.at("format"), 1);
  EXPECT_EQ(parsed.at("created_utc").get<std::string>().size(), 20u);  // 2026-11-26T12:00:00Z
  EXPECT_TRUE(warnings_.empty());
}

// Metadata written by the hand-made writer of attnjit 0.1.0 (this layout, these escapes) is
// still read: the entry is a disk hit, not rebuilt.
TEST_F(KernelCacheTest, MetadataInTheEarlierLayoutStillReads) {
  const auto stored = make_cache().get_or_compile(sample_inputs(), [] { return fake_kernel("a"); });
  const CacheEntryMetadata& m = *stored.metadata;
  const std::string earlier = fmt::format(
      "{{\n"
      "  \"format\": 1,\n"
      "  \"key\": \"{}\",\n"
      "  \"variant_text\": \"score \\\"q\\\" \\\\ x\\n\\u0001\",\n"
      "  \"schedule_text\": \"block_m=128 block_n=64 warps=4 stages=1\",\n"
      "  \"nvrtc_options\": [\"-std=c++17\", \"--gpu-architecture=sm_80\", \"-default-device\"],\n"
      "  \"target_arch\": \"sm_80\",\n"
      "  \"nvrtc_version\": \"13.0\",\n"
      "  \"template_set_version\": \"0123456789abcdef0123456789abcdef\",\n"
      "  \"attnjit_version\": \"0.1.0\",\n"
      "  \"resources\": [\n"
      "    {{\"kernel_name\": \"k\", \"registers\": 42, \"shared_static_bytes\": 1024, \"spill_store_bytes\": 0, "
      "\"spill_load_bytes\": 0, \"stack_frame_bytes\": 0, \"barriers\": 1}}\n"
      "  ],\n"
      "  \"compile_ms\": 1.500,\n"
      "  \"cubin_size\": {},\n"
      "  \"cubin_checksum\": \"{}\",\n"
      "  \"created_unix_seconds\": 1764115200,\n"
      "  \"created_utc\": \"2025-11-26T00:00:00Z\"\n"
      "}}\n",
      m.key, m.cubin_size, m.cubin_checksum);
  std::ofstream(dir_ / (m.key + ".json"), std::ios::trunc) << earlier;

  int builds = 0;
  const auto read = make_cache().get_or_compile(sample_inputs(), [&] {
    ++builds;
    return fake_kernel("a");
  });
  EXPECT_EQ(read.source, CacheSource::DiskHit);
  EXPECT_EQ(builds, 0);
  EXPECT_EQ(read.metadata->variant_text, "score \"q\" \\ x\n\x01");
  EXPECT_EQ(read.metadata->resources.kernels.at(0).registers, 42);
  EXPECT_DOUBLE_EQ(read.metadata->compile_ms, 1.5);
  EXPECT_EQ(read.metadata->created_unix_seconds, 1764115200);
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(KernelCacheTest, MetadataWithAWrongFieldIsCorruptAndNamesTheField) {
  const auto stored = make_cache().get_or_compile(sample_inputs(), [] { return fake_kernel("a"); });
  const auto path = dir_ / (stored.metadata->key + ".json");
  nlohmann::json doc = nlohmann::json::parse(std::ifstream(path));
  doc["cubin_size"] = "many";
  std::ofstream(path, std::ios::trunc) << doc.dump(2);
  const auto checks = make_cache().verify();
  ASSERT_EQ(checks.size(), 1u);
  EXPECT_EQ(checks[0].health, EntryHealth::Corrupt);
  EXPECT_NE(checks[0].problem.find("field 'cubin_size' is \"many\", expected an integer"), std::string::npos)
      << checks[0].problem;
}

TEST_F(KernelCacheTest, ClearLeavesForeignFilesAlone) {
  auto cache = make_cache();
  cache.get_or_compile(sample_inputs(), [] { return fake_kernel("a"); });
  std::ofstream(dir_ / "notes.txt") << "mine";
  EXPECT_EQ(cache.clear(), 1u);
  EXPECT_TRUE(fs::exists(dir_ / "notes.txt"));
}

TEST_F(KernelCacheTest, TruncatedCubinIsDetectedAndRebuilt) {
  expect_corruption_detected_and_rebuilt(
      [](const fs::path& cubin) { fs::resize_file(cubin, fs::file_size(cubin) / 2); });
}

TEST_F(KernelCacheTest, FlippedByteIsDetectedAndRebuilt) {
  expect_corruption_detected_and_rebuilt([](const fs::path& cubin) {
    std::fstream file(cubin, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(10);
    char byte = 0;
    file.read(&byte, 1);
    byte ^= 0x01;
    file.seekp(10);
    file.write(&byte, 1);
  });
}

TEST_F(KernelCacheTest, GarbledMetadataIsDetectedAndRebuilt) {
  auto cache = make_cache();
  cache.get_or_compile(sample_inputs(), [] { return fake_kernel("a"); });
  std::ofstream(dir_ / (sample_inputs().key() + ".json")) << "{\"format\": 1, \"key\": ";
  auto fresh = make_cache();
  EXPECT_EQ(fresh.verify().at(0).health, EntryHealth::Corrupt);
  EXPECT_EQ(fresh.get_or_compile(sample_inputs(), [] { return fake_kernel("a"); }).source, CacheSource::Compiled);
  EXPECT_EQ(fresh.verify().at(0).health, EntryHealth::Ok);
}

TEST_F(KernelCacheTest, FailingBuildStoresNothing) {
  auto cache = make_cache();
  EXPECT_THROW(cache.get_or_compile(sample_inputs(), []() -> CompiledKernel { throw RuntimeFailure("nvrtc broke"); }),
               RuntimeFailure);
  EXPECT_EQ(cache.stats().entries, 0u);
  EXPECT_EQ(cache.stats().memory_entries, 0u);
}

TEST_F(KernelCacheTest, TwoProcessesStoringTheSameKeyLeaveOneEntry) {
  constexpr int kProcesses = 2;
  std::vector<pid_t> children;
  for (int i = 0; i < kProcesses; ++i) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int status = 1;
      try {
        KernelCache cache(KernelCacheOptions{}.set_directory(dir_).set_warning_sink([](const std::string&) {}));
        const auto result = cache.get_or_compile(sample_inputs(), [i] {
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          return fake_kernel(i == 0 ? "first" : "second");  // different bytes: only one may win
        });
        status = result.cubin && !result.cubin->empty() ? 0 : 2;
      } catch (...) {
        status = 3;
      }
      _exit(status);
    }
    children.push_back(pid);
  }
  for (const pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  auto cache = make_cache();
  const auto checks = cache.verify();
  ASSERT_EQ(checks.size(), 1u);
  EXPECT_EQ(checks[0].health, EntryHealth::Ok) << checks[0].problem;
  size_t files = 0;
  for (const auto& item : fs::directory_iterator(dir_))
    if (item.path().filename() != ".lock") ++files;
  EXPECT_EQ(files, 2u);  // <key>.cubin and <key>.json, no temporaries
  EXPECT_EQ(cache.get_or_compile(sample_inputs(), [] { return fake_kernel("third"); }).source, CacheSource::DiskHit);
}

TEST_F(KernelCacheTest, UnwritableDirectoryWarnsButStillReturnsTheKernel) {
  std::ofstream(root_ / "a_file") << "not a directory";
  dir_ = root_ / "a_file" / "cache";  // cannot be created, even by root
  auto cache = make_cache();
  const auto result = cache.get_or_compile(sample_inputs(), [] { return fake_kernel("a"); });
  EXPECT_EQ(result.source, CacheSource::Compiled);
  EXPECT_EQ(*result.cubin, fake_kernel("a").cubin);
  ASSERT_EQ(warnings_.size(), 1u);
  EXPECT_NE(warnings_[0].find("could not store"), std::string::npos);
  EXPECT_NE(warnings_[0].find("ATTNJIT_CACHE_DIR"), std::string::npos);
  EXPECT_EQ(cache.get_or_compile(sample_inputs(), [] { return fake_kernel("b"); }).source, CacheSource::MemoryHit);
}

TEST_F(KernelCacheTest, ThreadsRacingOnOneKeyAllGetTheSameBytes) {
  auto cache = make_cache();
  std::vector<std::thread> threads;
  std::vector<std::string> results(8);
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back(
        [&, i] { results[i] = *cache.get_or_compile(sample_inputs(), [] { return fake_kernel("same"); }).cubin; });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& result : results) EXPECT_EQ(result, fake_kernel("same").cubin);
  EXPECT_EQ(cache.verify().size(), 1u);
  EXPECT_EQ(cache.verify()[0].health, EntryHealth::Ok);
}

TEST_F(KernelCacheTest, StoresARealNvrtcCubin) {
  const std::string source = "extern \"C\" __global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }";
  const auto options = NvrtcCompileOptions{}.set_arch("sm_80");
  auto cache = make_cache();
  const auto result = cache.get_or_compile(CacheKeyInputs::for_compile(source, options),
                                           [&] { return CompiledKernel::from(compile_to_cubin(source, options)); });
  EXPECT_EQ(result.source, CacheSource::Compiled);
  EXPECT_EQ(result.cubin->compare(0, 4,
                                  "\x7f"
                                  "ELF"),
            0);
  EXPECT_GT(result.metadata->resources.kernels.at(0).registers, 0);
  EXPECT_EQ(
      make_cache().get_or_compile(CacheKeyInputs::for_compile(source, options), [] { return CompiledKernel{}; }).source,
      CacheSource::DiskHit);
}

}  // namespace
}  // namespace attnjit::runtime
