#!/usr/bin/env bash
# Recompute every committed reference (results/reference/<suite>/) from one clean commit.
#
#   bash scripts/recompute_references.sh [SUITE ...]     # default: every reference suite
#
# Refuses to start on a tree with uncommitted code (a reference comes from one clean commit, end
# to end) and stops if the commit changes while it runs. Each suite runs into a fresh folder
# beside its reference and replaces it only when complete, its samples packed into one file; a
# killed run started again resumes from the cache (trained models) and the fresh folder (rows).
# Takes hours on 2 CPU cores: `python -m flowbench status`-style progress is printed by each run.
set -euo pipefail
cd "$(dirname "$0")/.."
suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
    suites=(nfe_sweep flow_map_seeds tstar_sweep beta_sweep frontier recipe_ablation learning_curves steering
            english english_curve english_curve_long)
fi
dirty() { git status --porcelain --untracked-files=no -- . ':(exclude)results'; }
if [ -n "$(dirty)" ]; then
    echo "recompute_references: uncommitted changes outside results/; commit them first" >&2
    exit 2
fi
sha=$(git rev-parse --short HEAD)
for suite in "${suites[@]}"; do
    fresh="results/reference/.${suite}.${sha}"
    echo "== ${suite} at ${sha} -> results/reference/${suite}"
    if [ "${suite}" = steering ]; then
        python -m flowbench steer "suites/${suite}.yaml" --out "${fresh}"
    else
        python -m flowbench run "suites/${suite}.yaml" --out "${fresh}"
    fi
    [ "$(git rev-parse --short HEAD)" = "${sha}" ] && [ -z "$(dirty)" ] || {
        echo "recompute_references: the code changed during the run; ${fresh} is kept, not installed" >&2
        exit 1
    }
    # every row's samples in one file beside the leaderboard (flowbench/samples.py), not one per row
    python -c 'import sys; from flowbench.leaderboard import Leaderboard; Leaderboard(sys.argv[1]).pack_samples()' "${fresh}"
    rm -rf "results/reference/${suite}" && mv "${fresh}" "results/reference/${suite}"
done
# the README's headline table follows the new reference (and loses its stale note): commit it with it
if [ -f results/reference/nfe_sweep/leaderboard.csv ] && [ ! -f results/reference/nfe_sweep/STALE ]; then
    python -m flowbench report results/reference/nfe_sweep --readme README.md
fi
