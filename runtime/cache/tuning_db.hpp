// The tuning database: the knobs `attnjit tune` found, keyed by what makes a kernel and a
// shape alike (variant hash, arch, dtype, head dim, shape bucket) and by the kernel template
// the knobs belong to, so that `compile` and `bench` can use them later. SQLite in WAL mode
// with a busy timeout, so several tuners may write at once; a file that is not a SQLite
// database, or one written by a newer attnjit, is reported and never overwritten. The schema
// is versioned (PRAGMA user_version) and older files are migrated in place, in one
// transaction, when opened. Location: $ATTNJIT_TUNING_DB ("off" disables lookups), else
// <cache dir>/tuning.sqlite.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "compiler/knobs.hpp"
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
  std::string template_name;  // the kernel template the knobs belong to ("fwd_sm80"); part of the key
  Knobs knobs;                // that template's knob values (stored as {"version":1,"knobs":{...}})
  std::string variant_name;   // for people reading --list; not part of the key
  std::string shape;          // the shape it was tuned on, "B=4 Hq=16 Hkv=16 Sq=4096 Sk=4096"
  double ms = 0, tflops = 0;
  double default_ms = 0;  // the default schedule's time on the same shape and run
  std::string version;    // attnjit version that measured it
  std::string date;       // YYYY-MM-DD (UTC)
};

class TuningDatabase {
 public:
  // The schema this code reads and writes (SQLite PRAGMA user_version). 0: the first layout
  // (table tuned_schedules, the fwd_sm80 schedule in columns), migrated in place on open;
  // 1: table tuning_records, keyed also by template, knobs as a versioned JSON blob.
  static constexpr int kSchemaVersion = 1;

  // Opens (creating the file and its folder when missing) and migrates an older schema.
  // RuntimeFailure naming the path and the remedy when it cannot be opened, is not a SQLite
  // database, or has a newer schema than kSchemaVersion; such a file is left byte for byte as
  // it was. A failed migration rolls back and leaves the file as it was, too.
  explicit TuningDatabase(std::filesystem::path path);
  ~TuningDatabase();
  TuningDatabase(const TuningDatabase&) = delete;
  TuningDatabase& operator=(const TuningDatabase&) = delete;

  // $ATTNJIT_TUNING_DB, else default_cache_directory() / "tuning.sqlite".
  static std::filesystem::path default_path();

  const std::filesystem::path& path() const { return path_; }
  // Inserts, or replaces the record with the same key and template. UserError when
  // template_name is empty.
  void put(const TuningRecord& record);
  std::optional<TuningRecord> find(const TuningKey& key, const std::string& template_name) const;
  // Ordered by variant, arch, dtype, head dim, bucket, template.
  std::vector<TuningRecord> list() const;

  // {"format": "attnjit-tuning", "version": 2, "records": [{..., "template": "fwd_sm80",
  // "knobs": {"block_m": 128, ...}, ...}]}
  std::string export_json() const;
  // Adds or replaces every record of a document made by export_json (version 2, or version 1
  // with the fwd_sm80 schedule in block_m, block_n, num_warps, stages fields), in one
  // transaction; UserError naming the record and field when one is malformed or its knobs
  // are not usable (nothing is imported then).
  int import_json(const std::string& json_text);

 private:
  std::filesystem::path path_;
  struct Connection;
  std::unique_ptr<Connection> db_;
};

// Checks a template's knobs before they are imported or used. The template name must be
// lowercase letters, digits and '_', and the knobs not empty. For a registered template
// (compiler/kernel_template.hpp) the knobs must be exactly those of its knob space and pass
// its check_knobs at head_dim on arch; a template this attnjit does not have is not checked
// further (its records are kept but never looked up). UserError naming the knob, the value
// and the allowed set.
void check_tuned_knobs(const std::string& template_name, const Knobs& knobs, int head_dim, const std::string& arch);

// The compile-time lookup (used by attnjit::generate when no schedule is set and a shape
// hint is given): the knobs tuned for `template_name` on this variant, arch, dtype, head dim
// and shape bucket, checked with check_tuned_knobs. Never throws: a missing file gives
// nothing; a database or record that cannot be used gives nothing and one warning per
// process on stderr.
std::optional<Knobs> find_tuned_knobs(const Variant& variant, const std::string& template_name, const std::string& arch,
                                      ElementType dtype, int head_dim, const ShapeHint& shape);

}  // namespace attnjit
