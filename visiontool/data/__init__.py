"""Datasets: readers for COCO, Pascal VOC, YOLO, ImageFolder and CSV, validation, writers and
conversion, the synthetic shape/digit generator, box-aware augmentation presets and statistics.

Entry points: `datasets.open_dataset`, `convert.convert_dataset`, `formats.coco.to_coco_dict`,
`check.check_dataset`, `synth.synth_detection`, `synth.synth_classification`,
`transforms.build_transforms`, `stats.dataset_stats`, `collate.detection_collate`.
"""
