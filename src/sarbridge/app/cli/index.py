"""Searchable indexes: ``sarbridge index build`` (a re-ID gallery with ``--data``, a map with ``--map``)
and ``sarbridge index query`` (re-ID; a map index is queried by ``sarbridge geo locate``)."""

from __future__ import annotations

import argparse
import json
import sys

from sarbridge.app.cli.aliases import add_deprecated_option
from sarbridge.app.cli.common import add_common, add_top_k
from sarbridge.app.cli.geo import add_map_index_args, cmd_build_index

#: Results per query the build-time tuning (--target-recall) measures recall at.
TUNE_K = 10
#: Indexed vectors the build-time tuning searches with (at most).
TUNE_SAMPLE = 1000


_MAP_ONLY = {"patch_size": None, "stride": None, "resume": False, "workers": None, "chunk_size": 4096}


def cmd_build(args: argparse.Namespace) -> int:
    import numpy as np

    from sarbridge.core.errors import ConfigError

    if (args.map is None) == (args.data is None):
        raise ConfigError("index build needs either --data (a re-ID gallery) or --map (a geo map index)",
                          "e.g. --model best.pt --data HOSS, or --model geo_model.pt --map optical.tif")
    if args.map is not None:
        if args.kind is not None or args.split != "gallery":
            raise ConfigError("--kind and --split are for re-ID galleries (--data)", "drop them with --map")
        return cmd_build_index(args)
    used = [k.replace("_", "-") for k, v in _MAP_ONLY.items() if getattr(args, k) != v]
    if used:
        raise ConfigError(f"--{', --'.join(used)} are for map indexes (--map)", "drop them with --data")
    args.kind = args.kind or "flat"

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

    res = query_gallery_index(args.index, args.query, modality=args.modality, k=args.top_k,
                              device=args.device or "auto")
    settings = read_search_settings(args.index)
    if args.json:
        print(json.dumps({**res, "search": settings}, indent=2))
        return 0
    print(f"query: {res['query']} ({res['modality']})")
    print(f"search: {describe_search_settings(settings, k=args.top_k)}")
    # the score is the cosine similarity of the centred, L2-normalised embeddings (ReIDModel.embed)
    print("rank  cosine   id      modality  path")
    for r in res["results"]:
        print(f"{r['rank']:>4}  {r['score']:+.4f}  {str(r['id']):<6}  {str(r['modality']):<8}  {r['path']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sarbridge index build|query``."""
    g = sub.add_parser("index", help="build a searchable index (re-ID gallery or map) and query a gallery")
    gsub = g.add_subparsers(dest="index_command", metavar="COMMAND")

    b = gsub.add_parser("build", help="embed a re-ID gallery (--data) or a map (--map) with a model and save an index",
                        description="Embed a dataset's gallery with a re-ID checkpoint (--data), or grid an optical "
                                    "map (GeoTIFF/COG, VRT or folder of GeoTIFF tiles) and embed its patches with a "
                                    "geo model (--map), and save a searchable index. A map is read window by window; "
                                    "its progress is committed in chunks (OUT/.build), so a killed build continues "
                                    "with --resume; under torchrun each process embeds its share.")
    b.add_argument("--model", required=True,
                   help="best.pt of 'sarbridge train' (with --data) or geo_model.pt of 'geo train' (with --map)")
    b.add_argument("--data", default=None, help="HOSS folder or manifest CSV: build a re-ID gallery index (default: none)")
    b.add_argument("--out", required=True, help="index folder")
    b.add_argument("--kind", default=None, choices=("flat", "ivfpq", "ivfsq", "hnsw"),
                   help="re-ID gallery: exact (flat, the default) or approximate (ivfpq, ivfsq, hnsw) search")
    b.add_argument("--target-recall", type=float, default=None, metavar="R",
                   help="tune the approximate search to recall@10 >= R (e.g. 0.95) on a sample of the "
                        "index's own embeddings and store the settings in the index (default: no tuning, "
                        "the kind's default settings)")
    b.add_argument("--split", default="gallery", choices=("gallery", "all"),
                   help="re-ID gallery: index the gallery (bounding_box_test) or every image (default: %(default)s)")
    add_map_index_args(b, required=False)
    b.add_argument("--json", action="store_true", help="map index: print the build summary as JSON (default: text)")
    add_common(b)
    b.set_defaults(func=cmd_build)

    q = gsub.add_parser("query", help="rank the indexed re-ID gallery for one query image")
    q.add_argument("--index", required=True, help="index folder from 'index build --data'")
    qq = q.add_mutually_exclusive_group(required=True)
    qq.add_argument("--query", help="query image")
    add_deprecated_option(qq, "--image", "--query", dest="query")
    add_top_k(q, 10, "results to list")
    q.add_argument("--modality", help="optical or sar (default: from an _RGB/_SAR file name suffix)")
    q.add_argument("--json", action="store_true", help="print JSON (default: text)")
    q.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    q.set_defaults(func=cmd_query)

    g.set_defaults(func=lambda a: (g.print_help(), 2)[1])
