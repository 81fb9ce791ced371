"""Evaluation: the paper's AP protocol (``ap``), COCO I/O (``coco``), the file-level scorer (``score``)
and the extra, clearly named metrics (``cocoeval``: COCO mask AP; ``ap.dsb_*``: the 2018 DSB score)."""
