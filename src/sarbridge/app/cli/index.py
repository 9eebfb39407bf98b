"""Searchable re-ID galleries: ``sarbridge index build|query``."""

from __future__ import annotations

import argparse
import json
import sys

from sarbridge.app.cli.common import add_common

#: Results per query the build-time tuning (--target-recall) measures recall at.
TUNE_K = 10
#: Indexed vectors the build-time tuning searches with (at most).
TUNE_SAMPLE = 1000


def cmd_build(args: argparse.Namespace) -> int:
    import numpy as np

    from sarbridge.retrieval.index import EmbeddingIndex, describe_search_settings, tune_search
    from sarbridge.retrieval.index.tune import check_target_recall
    from sarbridge.tasks.reid.gallery import build_gallery_index

    if args.target_recall is not None:
        check_target_recall(args.target_recall)  # refuse a bad target before embedding anything
    out = build_gallery_index(args.model, args.data, args.out, split=args.split, kind=args.kind,
                              device=args.device or "auto", overwrite=args.overwrite, progress=not args.quiet)
    index = EmbeddingIndex.load(out)
    print(f"index: {out} ({len(index)} images, kind {index.kind}, dim {index.dim})")
    if args.target_recall is not None and len(index):
        rng = np.random.default_rng(0)
        sample = index.embeddings(np.sort(rng.choice(len(index), min(TUNE_SAMPLE, len(index)), replace=False)))
        tuned = tune_search(index, sample, args.target_recall, k=TUNE_K, progress=not args.quiet)
        index.save(out)
        print(f"search: {describe_search_settings(index.search_settings(), k=TUNE_K)}; "
              f"{tuned['latency_ms']} ms per query")
        if not tuned["reached"]:
            print(f"warning: recall@{TUNE_K} {tuned['recall_at_k']} is below the target {tuned['target_recall']} "
                  "with every setting tried; the best one is stored (try --kind ivfsq or hnsw)", file=sys.stderr)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from sarbridge.retrieval.index import describe_search_settings, read_search_settings
    from sarbridge.tasks.reid.gallery import query_gallery_index

    res = query_gallery_index(args.index, args.image, modality=args.modality, k=args.k,
                              device=args.device or "auto")
    settings = read_search_settings(args.index)
    if args.json:
        print(json.dumps({**res, "search": settings}, indent=2))
        return 0
    print(f"query: {res['query']} ({res['modality']})")
    print(f"search: {describe_search_settings(settings, k=args.k)}")
    # the score is the cosine similarity of the centred, L2-normalised embeddings (ReIDModel.embed)
    print("rank  cosine   id      modality  path")
    for r in res["results"]:
        print(f"{r['rank']:>4}  {r['score']:+.4f}  {str(r['id']):<6}  {str(r['modality']):<8}  {r['path']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sarbridge index build|query``."""
    g = sub.add_parser("index", help="build and query a searchable re-ID gallery index")
    gsub = g.add_subparsers(dest="index_command")

    b = gsub.add_parser("build", help="embed a dataset's gallery with a checkpoint and save an index")
    b.add_argument("--model", required=True, help="re-ID checkpoint (best.pt of 'sarbridge train')")
    b.add_argument("--data", required=True, help="HOSS folder or manifest CSV")
    b.add_argument("--out", required=True, help="index folder")
    b.add_argument("--kind", default="flat", choices=("flat", "ivfpq", "ivfsq", "hnsw"),
                   help="exact (flat, the default) or approximate (ivfpq, ivfsq, hnsw; need faiss) search")
    b.add_argument("--target-recall", type=float, default=None, metavar="R",
                   help="tune the approximate search to recall@10 >= R (e.g. 0.95) on a sample of the "
                        "gallery's own embeddings and store the settings in the index (default: no tuning, "
                        "the kind's default settings)")
    b.add_argument("--split", default="gallery", choices=("gallery", "all"),
                   help="index the gallery (bounding_box_test) or every image")
    b.add_argument("--overwrite", action="store_true", help="replace an index already in OUT")
    add_common(b)
    b.set_defaults(func=cmd_build)

    q = gsub.add_parser("query", help="rank the indexed gallery for one query image")
    q.add_argument("--index", required=True, help="index folder from 'index build'")
    q.add_argument("--image", required=True, help="query image")
    q.add_argument("-k", type=int, default=10, help="results to list")
    q.add_argument("--modality", help="optical or sar (default: from an _RGB/_SAR file name suffix)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    q.set_defaults(func=cmd_query)

    g.set_defaults(func=lambda a: (g.print_help(), 2)[1])
