"""Experiments that play both roles, the owner's and the cloud's, each through its own command line.

``python -m experiments table1 --scale small|full --out DIR`` runs the paper's Table I (baseline,
conventional 1, conventional 2, proposed) for every chosen backbone and SETR decoder, the proposed method and
its baseline for the segmentors beyond SETR (Segmenter, UperNet-ViT, DPT) on the backbones that have configs
for them, and each SETR baseline again with other seeds (``--seeds``), to show how far a result moves from
seed to seed. Every run has the same iterations and batch size, and all but those extra baselines seed 0. It
writes to ``--out``: ``report.md`` (the table with the paper's values beside it, each method's gap to the
baseline beside the baseline's seed spread), ``table.csv``, ``bars.png`` (ours, and the paper's as a
reference group), ``fig4.png`` (a val image plain, encrypted by shuffling and with negative-positive too,
like the paper's Fig. 4) and ``fig5.png`` (input, encrypted input, ground truth and every method's
prediction, with a class legend, like the paper's Fig. 5: the last backbone and first decoder, ViT-Large and
MLA in the paper). ``python -m experiments bars DIR`` draws ``DIR/bars.png`` again from ``DIR/table.csv``.

Small scale (``docs/table1-small``: about 50 minutes on 2 CPU cores)::

    python -m experiments table1 --scale small --out docs/table1-small

generates the synthetic Cityscapes sample (96 train, 48 val images of 256x512), proxy-pretrains a ViT-Ti/16
and a ViT-S/16 on other generated scenes (training/pretrain.py; cached under ``--work``, or give timm
checkpoints with ``--weights vit-tiny=PATH``) and fine-tunes the tiny configs (64x64 crops, 128x128
inference windows) from them: SETR's three decoders on both backbones, four methods each, the baseline with
seeds 0 and 1, and Segmenter, UperNet-ViT and DPT on ViT-Ti/16.

Full scale (the paper's setting: Cityscapes, 80k iterations, 8 GPUs x batch 1)::

    python -m experiments table1 --scale full --out reports/table1 --work /scratch/table1 \\
        --raw /data/cityscapes \\
        --weights vit-base=/weights/vit_base_patch16_384.augreg_in21k_ft_in1k.safetensors \\
        --weights vit-large=/weights/vit_large_patch16_384.augreg_in21k_ft_in1k.safetensors \\
        --gpus 8

``--raw`` is a Cityscapes root (leftImg8bit/ and gtFine/ with labelIds), the weights are local timm
checkpoints of ``vit_base_patch16_384`` and ``vit_large_patch16_384`` (.safetensors, .pth or .npz; nothing
is downloaded). ``--backbones``, ``--decoders``, ``--segmentors`` and ``--methods`` choose rows
(``--segmentors segmenter,upernet,dpt`` adds the ViT-B/16 pairs); ``--iters`` shortens the schedule, every
LR scheduler scaled with it. Each training runs under ``torchrun`` on ``--gpus`` GPUs; the rest runs on one.
Disk: the owner's stores and three bundles per backbone, each about the size of Cityscapes' PNGs (the
owner-augmented one ``1 + --copies`` times the training split). The rows the paper lacks,
``paper-augmentation`` and ``owner-augmentation`` (the proposed method with mmseg's SETR augmentation on
ciphertext, and with flip and multi-scale done by the owner before encryption), run when ``--methods`` names
them; the first needs a ``*_proposed_paper-augmentation.py`` config (ViT-B/16 Naive and tiny Naive have one).

The modules: :mod:`experiments.catalogue` (what can run), :mod:`experiments.table1` (running it),
:mod:`experiments.report` and :mod:`experiments.figures` (what it writes), and :mod:`experiments.harness`
(the subprocess steps of either role, shared with the checks in ``checks/``).
"""
