"""Paired optical / SAR images: one reader per layout, the group-wise split, and a Dataset.

Every reader returns a list of :class:`PairItem` (an optical source, a SAR source, a key and a
group); a source is either an image path (read with :func:`sarbridge.data.io.read_image`) or a
picklable loader that returns the raw array (:func:`load_source` reads either). A
:class:`PairItem` also unpacks as ``optical, sar = item``. Contrastive pretraining
(``sarbridge pretrain --layout``) and bridge training (``data.format`` of ``sarbridge
diffusion-train``) read their pairs here.

Layouts (:func:`read_pairs` dispatches on the name):

``sen12``
    SEN1-2 style: ``ROI*/s1_N/..._s1_N_pK.png`` with the optical twin at the same path where the
    ``s1`` tokens of folder and file names read ``s2`` (``ROI*/s2_N/..._s2_N_pK.png``).
``qxs``
    QXS-SAROPT style: ``opt/`` (or ``optical/``) and ``sar/`` folders holding files of the same
    name (the stem is matched, so ``opt/a.png`` pairs with ``sar/a.tif``); every file must pair.
``folder``
    any paired set in ``opt/`` (or ``optical/``) and ``sar/``: as ``qxs``, but a trailing
    modality token of the name (``_RGB``, ``_SAR``, ``_opt`` ...) is ignored when matching and
    files without a partner are left out.
``manifest``
    sarbridge's manifest CSV (:mod:`sarbridge.data.manifest`): images with the same ``id`` and
    different modalities form pairs; by default only the ``train`` split is used, so test
    identities never reach training. An id with ``a`` optical and ``b`` SAR images gives
    ``max(a, b)`` pairs (the shorter list is cycled), so every image is used.
``hoss``
    identity pairs of a HOSS-layout folder's ``bounding_box_train``: every optical x SAR image
    of the same ship id (optionally a seeded choice of at most ``max_pairs_per_id``);
    distractors (id -1) are never paired. The two images show the same ship, not the same
    acquisition.
``bigearthnet``
    BigEarthNet Sentinel-1/2 patches as ``.npz`` (``s1/{s1_name}.npz`` with ``VV``, ``VH`` and
    ``s2/{patch_id}.npz`` with the bands), paired by ``pairs.csv`` (``patch_id``, ``s1_name``)
    or, without it, by the MGRS tile and grid row/column at the end of the names.
    SAR: see :class:`BigEarthNetSARLoader`; optical: see :class:`BigEarthNetRGBLoader`.
``os``
    the OS dataset as CMPC's ``data/data_os.py`` reads it: ``ROOT/train/`` and ``ROOT/test/``
    holding ``opt<N>.png`` / ``sar<N>.png`` pairs (:mod:`~sarbridge.data.pairs.os_dataset`); only
    ``train/`` unless ``split="test"`` or ``"all"``.
``synthetic``
    a set written by :func:`sarbridge.data.synthetic.generate_hoss_dataset`: its ``pairs.csv``
    lists same-pose optical/SAR chips. Only training identities (``bounding_box_train``) are
    used unless ``split="test"`` (the held-out identities) or ``"all"``.

The group of a pair is its identity where the layout has one (``manifest``, ``hoss``,
``synthetic``), else the pair itself; :func:`split_pairs` holds out whole groups.

:class:`PairDataset` turns pairs into tensors through a :class:`~sarbridge.data.transforms.PreprocessSpec`
(the same per-modality conversion, resizing and normalisation as re-identification).

Modules: :mod:`~sarbridge.data.pairs.items` (:class:`PairItem`, sources), :mod:`~sarbridge.data.pairs.readers`
(the layouts, :func:`read_pairs`), :mod:`~sarbridge.data.pairs.bigearthnet`, :mod:`~sarbridge.data.pairs.split`
and :mod:`~sarbridge.data.pairs.dataset`; everything is importable from here.
"""

from __future__ import annotations

from sarbridge.data.pairs.bigearthnet import BigEarthNetRGBLoader, BigEarthNetSARLoader, read_bigearthnet_pairs
from sarbridge.data.pairs.dataset import PairDataset
from sarbridge.data.pairs.items import PairItem, Source, load_source
from sarbridge.data.pairs.os_dataset import OS_SPLITS, read_os_pairs
from sarbridge.data.pairs.readers import (
    LAYOUTS,
    SCENE_LAYOUTS,
    SYNTHETIC_SPLITS,
    read_folder_pairs,
    read_hoss_pairs,
    read_manifest_pairs,
    read_pairs,
    read_qxs_pairs,
    read_sen12_pairs,
    read_synthetic_pairs,
)
from sarbridge.data.pairs.split import split_pairs

__all__ = [
    "LAYOUTS",
    "OS_SPLITS",
    "SCENE_LAYOUTS",
    "SYNTHETIC_SPLITS",
    "BigEarthNetRGBLoader",
    "BigEarthNetSARLoader",
    "PairDataset",
    "PairItem",
    "Source",
    "load_source",
    "read_bigearthnet_pairs",
    "read_folder_pairs",
    "read_hoss_pairs",
    "read_manifest_pairs",
    "read_os_pairs",
    "read_pairs",
    "read_qxs_pairs",
    "read_sen12_pairs",
    "read_synthetic_pairs",
    "split_pairs",
]
