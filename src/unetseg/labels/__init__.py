"""Labels from labelling tools: their exports read with their own libraries and written as a folder of pairs
(``images/``, ``masks/`` palette PNGs, ``classes.csv``) that ``check-data`` and ``train`` read as they are."""

from unetseg.labels.coco import import_coco
from unetseg.labels.cvat import import_cvat
from unetseg.labels.labelme import import_labelme
from unetseg.labels.write import ImportResult

__all__ = ["ImportResult", "import_coco", "import_cvat", "import_labelme"]
