// The tuning database: the schedules `attnjit tune` found, keyed by what makes a kernel
// and a shape alike (variant hash, arch, dtype, head dim, shape bucket), so that `compile`
// and `bench` can use them later. SQLite in WAL mode with a busy timeout, so several
// tuners may write at once; a file that is not a SQLite database is reported and never
// overwritten. Location: $ATTNJIT_TUNING_DB ("off" disables lookups), else
// <cache dir>/tuning.sqlite.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "compiler/schedule.hpp"
#include "dsl/variant.hpp"

namespace attnjit {

// The shape a kernel will run on, as a compile-time hint (it selects the tuned schedule).
struct ShapeHint {
  int batch = 1, heads_q = 1, heads_kv = 1, seq_q = 1, seq_k = 1;
};

// Sequence lengths round up to a power of two; GQA/MQA (heads_q != heads_kv) is its own bucket.
struct TuningKey {
  std::string variant_hash;  // Variant::hash().hex()
  std::string arch;          // sm_80, ..., sm_90a
  std::string dtype;         // bf16, fp16
  int head_dim = 0;
  int seq_q_bucket = 0, seq_k_bucket = 0;
  bool gqa = false;

  static TuningKey make(const Variant& variant, const std::string& arch, ElementType dtype, int head_dim,
                        const ShapeHint& shape);
  static int bucket_of(int seq);  // smallest power of two >= seq (at least 1)
  std::string str() const;        // "sm_90a bf16 D=128 Sq<=4096 Sk<=4096 mha variant 0123..."
  friend bool operator==(const TuningKey&, const TuningKey&) = default;
};

struct TuningRecord {
  TuningKey key;
  Schedule schedule;
  std::string variant_name;  // for people reading --list; not part of the key
  std::string shape;         // the shape it was tuned on, "B=4 Hq=16 Hkv=16 Sq=4096 Sk=4096"
  double ms = 0, tflops = 0;
  double default_ms = 0;  // the default schedule's time on the same shape and run
  std::string version;    // attnjit version that measured it
  std::string date;       // YYYY-MM-DD (UTC)
};

class TuningDatabase {
 public:
  // Opens (creating the file and its folder when missing). RuntimeFailure naming the path
  // and the remedy when it cannot be opened or is not a SQLite database; such a file is
  // left byte for byte as it was.
  explicit TuningDatabase(std::filesystem::path path);
  ~TuningDatabase();
  TuningDatabase(const TuningDatabase&) = delete;
  TuningDatabase& operator=(const TuningDatabase&) = delete;

  // $ATTNJIT_TUNING_DB, else default_cache_directory() / "tuning.sqlite".
  static std::filesystem::path default_path();

  const std::filesystem::path& path() const { return path_; }
  void put(const TuningRecord& record);  // inserts, or replaces the record with the same key
  std::optional<TuningRecord> find(const TuningKey& key) const;
  std::vector<TuningRecord> list() const;  // ordered by variant, arch, dtype, head dim, bucket

  // {"format": "attnjit-tuning", "version": 1, "records": [...]}
  std::string export_json() const;
  // Adds or replaces every record of a document made by export_json, in one transaction;
  // UserError naming the record and field when one is malformed (nothing is imported then).
  int import_json(const std::string& json_text);

 private:
  std::filesystem::path path_;
  struct Connection;
  std::unique_ptr<Connection> db_;
};

// The compile-time lookup (used by attnjit::generate when no schedule is set and a shape
// hint is given). Never throws: a missing file gives nothing; a database that cannot be
// used gives nothing and one warning per process on stderr.
std::optional<Schedule> find_tuned_schedule(const Variant& variant, const std::string& arch, ElementType dtype,
                                            int head_dim, const ShapeHint& shape);

}  // namespace attnjit
