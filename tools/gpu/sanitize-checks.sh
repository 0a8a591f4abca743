#!/usr/bin/env bash
# compute-sanitizer (memcheck, then racecheck) over `attnjit check` calls that each run one
# kernel on one small shape: the decode unit (key split between warps, stream-K and split-K,
# forced splits, paged and contiguous caches), the backward (GQA, ALiBi, both shared-memory layouts,
# bwd_sm90's dq_bulk and dq_ordered) and fwd_sm90's persistent schedule and last_in_word (those
# need a Hopper GPU). Quicker than the reduced GPU suite under the sanitizer, for a kernel that
# just changed. Run on the device machine:
#   ATTNJIT=build-gpu/attnjit tools/gpu/sanitize-checks.sh
# ONLY=REGEX runs the checks whose name matches (e.g. ONLY=stream_k). ragged_causal and
# ragged_document (the block-mask kernel first) run fwd_sm80's ragged unit, or on a Hopper GPU
# fwd_sm90's (ATTNJIT_RAGGED_SM90=0 in the environment: fwd_sm80's), ragged_causal with the
# pre-pass's list (ragged_items 1); ragged_list_here runs fwd_sm90's with its items listed in the
# kernel (ragged_items 2, the default).
# Prints one line per (tool, check): errors found and the check's exit status; exits 1 when
# any run reported an error or failed.
set -uo pipefail
attnjit=${ATTNJIT:-build-gpu/attnjit}
sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
log_dir=${OUT:-/tmp}/sanitize-checks
mkdir -p "$log_dir"
decode="--batch 2 --heads 32 --heads-kv 8 --seq-q 1 --seq-k 4097"
checks=(
  "decode_default|--preset causal_bottom_right $decode"
  "decode_alibi_splits4|--preset alibi --template decode_sm80 --stream-k 0 --splits 4 $decode"
  "decode_stream_k_paged|--preset alibi --template decode_sm80 --stream-k 1 --batch 3 --heads 32 --heads-kv 8 --seq-q 1 --seq-k 5000 --seq-lens 0 1 4999 --page-size 48"
  "decode_stream_k|--preset softcap --param softcap=20 --template decode_sm80 --stream-k 1 --heads 16 --heads-kv 4 --seq-q 4 --seq-k 3001 --seq-lens 3001 7 0 1500"
  "decode_split_k_paged|--preset causal_bottom_right --template decode_sm80 --stream-k 0 --batch 3 --heads 32 --heads-kv 8 --seq-q 1 --seq-k 5000 --seq-lens 0 1 4097 --page-size 48"
  "decode_rope_steps|--preset rope_causal --template decode_sm80 --batch 2 --heads 16 --heads-kv 4 --seq-q 4 --seq-k 3001"
  "decode_rope_pairs|--preset rope_causal --template decode_sm80 --rope-steps 0 --batch 2 --heads 16 --heads-kv 4 --seq-q 4 --seq-k 3001"
  "decode_row_pad0_rope|--preset rope_causal --template decode_sm80 --row-pad 0 --batch 2 --heads 16 --heads-kv 4 --seq-q 4 --seq-k 3001"
  "decode_row_pad16_paged|--preset alibi --template decode_sm80 --row-pad 16 --batch 3 --heads 32 --heads-kv 8 --seq-q 1 --seq-k 5000 --seq-lens 0 1 4999 --page-size 48"
  "decode_sq4_stages3|--preset softcap --param softcap=20 --template decode_sm80 --stages 3 --batch 2 --heads 16 --heads-kv 4 --seq-q 4 --seq-k 3001"
  "kv_paged|--preset causal_bottom_right --batch 3 --heads 32 --heads-kv 8 --seq-q 1 --seq-k 5000 --seq-lens 0 1 4097 --page-size 48"
  "kv_contiguous|--preset sliding_window --param window=256 --batch 3 --heads 8 --heads-kv 8 --seq-q 1 --seq-k 5000 --seq-lens 7 4999 300"
  "ragged_causal|--preset causal_bottom_right --head-dim 128 --ragged-items 1 --heads 4 --heads-kv 2 --ragged-q 1,0,300,77,5 --ragged-k 5,3,333,77,0"
  "ragged_document|--preset document_causal --head-dim 128 --heads 4 --heads-kv 2 --ragged-q 1,0,300,77,5 --ragged-k 5,3,333,77,0"
  "ragged_list_here|--preset causal_bottom_right --arch sm_90a --head-dim 128 --persistent 1 --ragged-items 2 --heads 4 --heads-kv 2 --ragged-q 1,0,300,77,5 --ragged-k 5,3,333,77,0"
  "bwd_causal_gqa|--backward --preset causal --head-dim 128 --heads 8 --heads-kv 2 --seq-q 300 --seq-k 333"
  "bwd_alibi_d64|--backward --preset alibi_causal --head-dim 64 --heads 4 --seq-q 257 --seq-k 190"
  "bwd_document_d128|--backward --preset document --head-dim 128 --heads 4 --heads-kv 2 --seq-q 300 --seq-k 333"
  "bwd_dq_bulk|--backward --preset causal --dq-bulk 1 --head-dim 128 --heads 8 --heads-kv 2 --seq-q 300 --seq-k 333"
  "bwd_dq_bulk_deterministic|--backward --deterministic --preset causal --dq-bulk 1 --head-dim 64 --heads 8 --heads-kv 2 --seq-q 300 --seq-k 333"
  "bwd_dq_before_dk|--backward --preset alibi_causal --dq-before-dk 1 --dq-bulk 1 --head-dim 128 --heads 8 --heads-kv 2 --seq-q 300 --seq-k 333"
  "bwd_dq_ordered_deterministic|--backward --deterministic --preset causal --dq-ordered 1 --head-dim 128 --heads 8 --heads-kv 2 --seq-q 300 --seq-k 333"
  "bwd_softcap_row_pad8|--backward --preset softcap_causal --param softcap=20 --row-pad 8 --head-dim 128 --heads 4 --seq-q 200 --seq-k 257"
  "fwd_sm90_document_runs|--preset document_causal --arch sm_90a --head-dim 128 --heads 4 --heads-kv 2 --seq-q 1001 --seq-k 2600"
  "fwd_sm90_default_causal|--preset causal --arch sm_90a --seq-q 1000 --seq-k 1537"
  "persistent_alibi_default|--preset alibi_causal --arch sm_90a --batch 2 --heads 4 --seq-q 1000 --seq-k 1537"
  "persistent_causal_1q|--preset causal --arch sm_90a --persistent 1 --consumers 1 --block-n 64 --seq-q 1000 --seq-k 1537"
  "persistent_d256|--preset alibi --arch sm_90a --persistent 1 --head-dim 256 --seq-q 513 --seq-k 777"
  "last_in_word_persistent|--preset causal_bottom_right --arch sm_90a --persistent 1 --last-in-word 1 --batch 2 --heads 4 --seq-q 1000 --seq-k 300"
  "last_in_word_document|--preset document_causal --arch sm_90a --last-in-word 1 --head-dim 64 --heads 4 --seq-q 1001 --seq-k 1001"
)
status=0
for tool in memcheck racecheck; do
  for entry in "${checks[@]}"; do
    name=${entry%%|*}
    args=${entry#*|}
    [[ "$name" =~ ${ONLY:-.} ]] || continue
    log="$log_dir/${tool}_$name.log"
    # shellcheck disable=SC2086  # args is a word list on purpose
    "$sanitizer" --tool "$tool" --print-limit 20 "$attnjit" check $args >"$log" 2>&1
    rc=$?
    errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) error.*/\1/p; s/.*RACECHECK SUMMARY: .*(\([0-9]*\) error.*/\1/p' "$log" |
      awk '{ n += $1; seen = 1 } END { if (seen) print n; else print "?" }')
    printf '%-10s %-28s errors %-3s rc %s\n' "$tool" "$name" "$errors" "$rc"
    if [ "$errors" != 0 ] || [ "$rc" != 0 ]; then
      status=1
      tail -n 15 "$log"
    fi
  done
done
exit "$status"
