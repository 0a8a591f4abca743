// `attnjit tune`: search the chosen kernel template's knob space (all of it, or the values
// `--only KNOB=V1,V2` keeps) for a variant on one or more shapes and store the winners in the
// tuning database (`--backward`: the backward template's knobs); `--list`, `--export FILE`,
// `--import FILE` manage it.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "compiler/knob_space.hpp"
#include "runtime/cache/tuning_db.hpp"
#include "runtime/tuning/autotune.hpp"
#include "tools/cli/commands.hpp"
#include "tools/cli/kernel_args.hpp"

namespace attnjit::cli {
namespace {

struct TuneArgs {
  KernelArgs kernel;
  std::vector<std::string> shapes;
  std::vector<std::string> only;  // KNOB=V1,V2,...
  int threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
  int reps = 20, warmup = 5;
  int head_dim = 0;  // --head-dim: a check that every --shape has this D (0: none)
  bool no_check = false, no_store = false, list = false;
  bool backward = false;  // --backward: the backward template's knobs
  std::string export_path, import_path, db_path;
};

std::string database_path(const TuneArgs& a) {
  return a.db_path.empty() ? TuningDatabase::default_path().string() : a.db_path;
}

// `--only` values: knob name -> the values to try, in the order given.
std::map<std::string, std::vector<int>> parse_only(const std::vector<std::string>& only) {
  std::map<std::string, std::vector<int>> out;
  for (const auto& text : only) {
    const auto eq = text.find('=');
    const std::string name = eq == std::string::npos ? "" : text.substr(0, eq);
    std::vector<int> values;
    bool ok = !name.empty();
    if (ok) {
      std::stringstream ss(text.substr(eq + 1));
      std::string item;
      while (ok && std::getline(ss, item, ',')) {
        try {
          std::size_t used = 0;
          values.push_back(std::stoi(item, &used));
          ok = used == item.size();
        } catch (const std::logic_error&) {
          ok = false;
        }
      }
      ok = ok && !values.empty();
    }
    if (!ok)
      throw UserError(
          fmt::format("--only '{}' is not KNOB=V1,V2,... with integer values, e.g. --only block_m=64,128", text));
    if (out.count(name)) throw UserError(fmt::format("--only gives knob '{}' twice; list its values once", name));
    out[name] = std::move(values);
  }
  return out;
}

// The knob space of every forward and backward template, for --only's help.
std::string knob_space_help() {
  std::string out;
  for (const auto& t : TemplateRegistry::instance().all()) {
    if (t->role() != TemplateRole::Forward && t->role() != TemplateRole::Backward) continue;
    std::string knobs;
    for (const auto& k : t->knob_space(128))
      knobs += fmt::format("{}{} ({})", knobs.empty() ? "" : ", ", k.name, fmt::join(k.values, ","));
    out += fmt::format("; {}: {}", t->name(), knobs);
  }
  return out;
}

void print_progress(const TuneProgress& p, bool tty) {
  const std::string best = p.best ? fmt::format("best {} {:.4f} ms", p.best->knobs.str(), p.best->ms) : "best -";
  const std::string last = p.last->error.empty() ? fmt::format("{:.4f} ms", p.last->ms) : std::string("failed");
  if (tty) {
    constexpr int width = 24;
    const int filled = p.total ? p.done * width / p.total : width;
    fmt::print(stderr, "\r[{}{}] {}/{} | {}\033[K", std::string(static_cast<std::size_t>(filled), '#'),
               std::string(static_cast<std::size_t>(width - filled), '.'), p.done, p.total, best);
    if (p.done == p.total) fmt::print(stderr, "\n");
  } else {
    fmt::print(stderr, "[{}/{}] {}: {} | {}\n", p.done, p.total, p.last->knobs.str(), last, best);
  }
  std::fflush(stderr);
}

void list_database(const TuneArgs& a) {
  TuningDatabase db(database_path(a));
  const auto records = db.list();
  fmt::print("tuning database {}: {} record(s)\n", db.path().string(), records.size());
  if (records.empty()) return;
  fmt::print("{:<18} {:<7} {:<5} {:>4} {:>7} {:>7} {:<4} {:<10} {:<40} {:>9} {:>9} {:>8} {:<10}\n", "variant", "arch",
             "dtype", "D", "Sq<=", "Sk<=", "gqa", "template", "knobs", "ms", "default", "TFLOP/s", "date");
  for (const auto& r : records)
    fmt::print("{:<18} {:<7} {:<5} {:>4} {:>7} {:>7} {:<4} {:<10} {:<40} {:>9.4f} {:>9.4f} {:>8.1f} {:<10}\n",
               r.variant_name, r.key.arch, r.key.dtype, r.key.head_dim, r.key.seq_q_bucket, r.key.seq_k_bucket,
               r.key.gqa ? "yes" : "no", r.template_name, r.knobs.str(), r.ms, r.default_ms, r.tflops, r.date);
}

void tune_shapes(const TuneArgs& a) {
  const Variant v = a.kernel.variant();
  const Bindings scalars = a.kernel.bindings();
  std::unique_ptr<TuningDatabase> db;
  if (!a.no_store) db = std::make_unique<TuningDatabase>(database_path(a));  // fails early on a bad file
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  for (const auto& text : a.shapes) {
    const auto [problem, dim] = parse_shape(text);
    KernelArgs k = a.kernel;
    k.head_dim = dim;
    const CompileOptions base = k.options();
    TuneOptions o;
    o.restrict_to = parse_only(a.only);
    o.threads = a.threads;
    o.bench.repetitions = a.reps;
    o.bench.warmup = a.warmup;
    o.check = !a.no_check;
    o.database = db.get();
    o.on_progress = [tty](const TuneProgress& p) { print_progress(p, tty); };
    fmt::print("== tune {}{} D={} {} on {}\n", a.backward ? "the backward of " : "", v.name(), dim, a.kernel.dtype,
               problem.str());
    std::fflush(stdout);
    const TuneResult r =
        a.backward ? tune_backward(v, base, problem, scalars, o) : tune_forward(v, base, problem, scalars, o);
    const auto check_summary = [&r]() -> std::optional<std::string> {
      if (r.check) return r.check->summary();
      if (r.backward_check) return r.backward_check->summary();
      return std::nullopt;
    };
    fmt::print("arch {}, template {}: {} candidates compiled, {} pruned before compiling\n", r.arch, r.template_name,
               r.candidates.size(), r.pruned.size());
    for (const auto& p : r.pruned) fmt::print("  pruned {}: {}\n", p.knobs.str(), p.reason);
    for (const auto& c : r.candidates)
      if (!c.error.empty()) fmt::print("  failed {}: {}\n", c.knobs.str(), c.error.substr(0, 300));
    fmt::print("default {:<40} {:>9.4f} ms {:>7.1f} TFLOP/s\n", r.default_knobs.str(), r.default_result.median_ms,
               r.default_result.tflops);
    if (!r.best) {
      fmt::print("no candidate ran and passed the check; nothing stored\n");
      if (const auto check = check_summary()) fmt::print("check ({}): {}\n", r.check_problem.str(), *check);
      continue;
    }
    fmt::print("best    {:<40} {:>9.4f} ms {:>7.1f} TFLOP/s ({:.3f}x the default{})\n", r.best->knobs.str(), r.best->ms,
               r.best->tflops, r.speedup(), r.best->knobs == r.default_knobs ? "; the heuristic is already best" : "");
    if (const auto check = check_summary()) fmt::print("check   {}: {}\n", r.check_problem.str(), *check);
    if (r.stored) fmt::print("stored in {}\n", db->path().string());
    std::fflush(stdout);
  }
}

}  // namespace

void register_tune_command(CLI::App& app) {
  auto a = std::make_shared<TuneArgs>();
  auto* tune = app.add_subcommand("tune", "Search a template's knobs for a variant and shape; store the winners");
  tune->add_option("--preset", a->kernel.preset, "Preset name (see `attnjit variant list`)");
  tune->add_option("--variant", a->kernel.variant_text, "Variant text, or @file");
  tune->add_option("--arch", a->kernel.arch, "auto (the GPU's), sm_80, sm_86, sm_89, sm_90, sm_90a")
      ->capture_default_str();
  tune->add_option("--dtype", a->kernel.dtype, "bf16 or fp16")->capture_default_str();
  tune->add_option("--template", a->kernel.template_name,
                   "Kernel template whose knobs are searched (see `attnjit templates`); default: the best one");
  tune->add_flag("--backward", a->backward,
                 "Tune the backward (Kernel::backward after the default forward; template bwd_sm80): its record is "
                 "used by a kernel compiled for the shape's bucket");
  tune->add_option("--only", a->only,
                   "Try only these values of a knob, KNOB=V1,V2,... (repeatable); the others take every value of "
                   "the template's space" +
                       knob_space_help());
  tune->add_option("--shape", a->shapes, "B,H,Hkv,Sq,Sk,D (repeatable)");
  tune->add_option("--head-dim", a->head_dim,
                   "Optional, as in bench: each --shape's D must equal it (tune takes the head dimension from "
                   "--shape)");
  tune->add_option("--param", a->kernel.params, "Runtime parameter NAME=VALUE (repeatable)");
  tune->add_option("--threads", a->threads, "NVRTC compile threads")->capture_default_str();
  tune->add_option("--reps", a->reps, "Timed launches per candidate")->capture_default_str();
  tune->add_option("--warmup", a->warmup, "Untimed launches per candidate")->capture_default_str();
  tune->add_flag("--no-check", a->no_check, "Do not check the winner against the CPU reference");
  tune->add_flag("--no-store", a->no_store, "Do not write the winners to the tuning database");
  tune->add_option("--db", a->db_path, "Tuning database (default: $ATTNJIT_TUNING_DB, else <cache dir>/tuning.sqlite)");
  tune->add_flag("--list", a->list, "List the tuning database's records");
  tune->add_option("--export", a->export_path, "Write the tuning database's records to a JSON file");
  tune->add_option("--import", a->import_path, "Add (or replace) the records of a JSON file from --export");
  tune->callback([a] {
    const int modes = (a->list ? 1 : 0) + (a->export_path.empty() ? 0 : 1) + (a->import_path.empty() ? 0 : 1) +
                      (a->shapes.empty() ? 0 : 1);
    if (modes == 0)
      throw UserError(
          "attnjit tune needs --shape B,H,Hkv,Sq,Sk,D (with --preset or --variant), or one of --list, --export FILE, "
          "--import FILE");
    if (modes > 1) throw UserError("give only one of --shape, --list, --export FILE, --import FILE");
    if (a->threads < 1 || a->threads > 64)
      throw UserError(fmt::format("--threads {} is out of range; use 1 to 64", a->threads));
    if (a->reps < 1 || a->warmup < 0)
      throw UserError(fmt::format("--reps {} must be at least 1 and --warmup {} at least 0", a->reps, a->warmup));
    if (a->list) return list_database(*a);
    if (!a->export_path.empty()) {
      TuningDatabase db(database_path(*a));
      const std::string json = db.export_json();
      std::ofstream out(a->export_path, std::ios::binary | std::ios::trunc);
      if (!out || !(out << json) || !out.flush())
        throw UserError(fmt::format("cannot write '{}'; check the path and permissions", a->export_path));
      fmt::print("exported {} record(s) from {} to {}\n", db.list().size(), db.path().string(), a->export_path);
      return;
    }
    if (!a->import_path.empty()) {
      std::ifstream in(a->import_path, std::ios::binary);
      if (!in) throw UserError(fmt::format("cannot read '{}'; check the path", a->import_path));
      std::stringstream ss;
      ss << in.rdbuf();
      TuningDatabase db(database_path(*a));
      const int n = db.import_json(ss.str());
      fmt::print("imported {} record(s) from {} into {}\n", n, a->import_path, db.path().string());
      return;
    }
    // Parse every shape before the (long) search starts, so a typo fails at once.
    for (const auto& s : a->shapes) {
      const int dim = parse_shape(s).second;
      if (!is_supported_head_dim(dim))
        throw UserError(
            fmt::format("--shape '{}': head_dim {} is not supported; allowed: 32, 64, 96, 128, 256", s, dim));
      if (a->head_dim != 0 && dim != a->head_dim)
        throw UserError(fmt::format("--shape '{}' has head_dim {} but --head-dim is {}; tune takes D from each --shape",
                                    s, dim, a->head_dim));
    }
    a->kernel.variant();
    a->kernel.bindings();
    a->kernel.options();  // an unknown --template or --dtype
    const TemplateRole role = a->backward ? TemplateRole::Backward : TemplateRole::Forward;
    if (!a->kernel.template_name.empty()) {
      const KernelTemplate& named = TemplateRegistry::instance().get(a->kernel.template_name);
      if (named.role() != role)
        throw UserError(fmt::format("--template {} is a {} template; tune searches {} templates{}", named.name(),
                                    template_role_name(named.role()), template_role_name(role),
                                    named.role() == TemplateRole::Backward ? " (add --backward for it)" : ""));
    }
    const auto only = parse_only(a->only);
    if (!only.empty()) {
      // A knob no template has, or (with --template) one the template lacks, fails before the search.
      if (!a->kernel.template_name.empty()) {
        enumerate_knobs(TemplateRegistry::instance().get(a->kernel.template_name), parse_shape(a->shapes[0]).second,
                        max_shared_memory_for_arch("sm_90a"), only);
      } else {
        std::set<std::string> knobs;
        for (const auto& t : TemplateRegistry::instance().all())
          if (t->role() == role)
            for (const auto& k : t->knob_space(128)) knobs.insert(k.name);
        for (const auto& [name, values] : only)
          if (!knobs.count(name))
            throw UserError(
                fmt::format("--only {}: no {} template has a knob '{}'; the knobs are: {} (see "
                            "`attnjit templates`)",
                            name, template_role_name(role), name, fmt::join(knobs, ", ")));
      }
    }
    tune_shapes(*a);
  });
}

}  // namespace attnjit::cli
