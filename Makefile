# visiontool developer commands. `make test` and `make demo` each work alone on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint format demo weights bench clean

# The shipped models: data recipes and training commands (recorded in
# visiontool/weights/manifest.json, shipped in the package).
SHAPES_DATA := $(BIN)/visiontool data synth --out runs/data/shapes --n 1000 --imgsz 256 --format coco --seed 7
SHAPES_TRAIN := $(BIN)/visiontool train --data runs/data/shapes --head frcnn --backbone mobilenet_v3_small \
	--returned-layers 1 --returned-layers 2 --returned-layers 3 --returned-layers 5 --fpn-channels 64 \
	--box-head 256 --anchor-sizes 12,24,48,96,192 --imgsz 256 --epochs 24 --batch 8 --lr 0.02 \
	--workers 1 --augment frcnn --model-name shapes-frcnn --seed 0 --out runs/weights/shapes-frcnn-base --exist-ok
SHAPES_FINETUNE := $(BIN)/visiontool train --data runs/data/shapes --head frcnn --backbone mobilenet_v3_small \
	--returned-layers 1 --returned-layers 2 --returned-layers 3 --returned-layers 5 --fpn-channels 64 \
	--box-head 256 --anchor-sizes 12,24,48,96,192 --imgsz 352 --epochs 8 --batch 8 --lr 0.008 \
	--warmup 0.3 --workers 1 --augment frcnn --model-name shapes-frcnn --seed 1 \
	--weights runs/weights/shapes-frcnn-base/weights/best.pt --out runs/weights/shapes-frcnn --exist-ok
TINYSSD_DATA := $(BIN)/visiontool data synth --out runs/data/shapes2k --n 2000 --imgsz 256 --format coco --seed 101
TINYSSD_TRAIN := $(BIN)/visiontool train --data runs/data/shapes2k --model tinyssd \
	--anchor-sizes "15,23;33,46;67,87;115,141;179,230" --epochs 20 --batch 8 --optimizer adamw --lr 0.002 \
	--amp --workers 0 --model-name shapes-tinyssd --seed 0 --out runs/weights/shapes-tinyssd-base --exist-ok
# then far more images (a fresh 24k-image set), from that checkpoint, with an EMA of the weights
SHAPES24K_DATA := $(BIN)/visiontool data synth --out runs/data/shapes24k --n 24000 --imgsz 256 \
	--val-fraction 0.0125 --format coco --seed 1001
TINYSSD_FINETUNE := $(BIN)/visiontool train --data runs/data/shapes24k --model tinyssd \
	--anchor-sizes "15,23;33,46;67,87;115,141;179,230" --weights runs/weights/shapes-tinyssd-base/weights/best.pt \
	--epochs 3 --batch 8 --optimizer adamw --lr 0.001 --warmup 0.05 --ema --amp --workers 0 \
	--model-name shapes-tinyssd --seed 2 --out runs/weights/shapes-tinyssd --exist-ok
HELDOUT_SHAPES := visiontool data synth --out runs/data/heldout --n 1500 --imgsz 256 --format coco --seed 202
DIGITS_DATA := $(BIN)/visiontool data synth --task classify --kind digits --out runs/data/digits --n 5000 --imgsz 32 --seed 11
DIGITS_TRAIN := $(BIN)/visiontool train --task classify --model lenet --data runs/data/digits --epochs 30 \
	--batch 64 --optimizer adamw --lr 0.003 --weight-decay 0.0001 --warmup 1 --workers 0 --model-name digits-lenet \
	--seed 0 --out runs/weights/digits-lenet --exist-ok

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# pytest exits 5 when it collected nothing: treat that as a failure, not a pass.
# One worker per core (pytest-xdist, at most 4), one torch thread each (tests/conftest.py).
test: $(STAMP)
	@$(BIN)/python -m pytest -q -n auto --maxprocesses 4; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

# The quick tier: everything but the tests marked slow (a few seconds each or more).
test-fast: $(STAMP)
	@$(BIN)/python -m pytest -q -m "not slow"; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

lint: $(STAMP)
	$(BIN)/ruff format --check visiontool tests benchmarks tools
	$(BIN)/ruff check visiontool tests benchmarks tools

format: $(STAMP)
	$(BIN)/ruff format visiontool tests benchmarks tools
	$(BIN)/ruff check --fix visiontool tests benchmarks tools

OUT ?= runs/demo
demo: $(STAMP)
	$(BIN)/visiontool detect examples --model shapes-tinyssd --out $(OUT) --exist-ok

# Retrain the shipped models from scratch on CPU (about 3.5 hours on 2 cores) and refresh the manifest.
weights: $(STAMP)
	rm -rf runs/data/shapes runs/data/shapes2k runs/data/shapes24k runs/data/digits
	$(SHAPES_DATA)
	$(SHAPES_TRAIN)
	$(SHAPES_FINETUNE)
	$(BIN)/python tools/ship_weights.py shapes-frcnn runs/weights/shapes-frcnn runs/data/shapes \
		--checkpoint last.pt \
		--description "Faster R-CNN (MobileNetV3-Small FPN, strides 4-32) for the six synthetic shapes" \
		--data-recipe '$(subst $(BIN)/,,$(SHAPES_DATA))' \
		--command '$(subst $(BIN)/,,$(SHAPES_TRAIN)) && $(subst $(BIN)/,,$(SHAPES_FINETUNE))'
	$(TINYSSD_DATA)
	$(TINYSSD_TRAIN)
	$(SHAPES24K_DATA)
	$(TINYSSD_FINETUNE)
	$(BIN)/python tools/ship_weights.py shapes-tinyssd runs/weights/shapes-tinyssd runs/data/shapes24k \
		--earlier-run runs/weights/shapes-tinyssd-base --tune-conf \
		--description "TinySSD (d2l, 5 scales of multibox anchors) for the six synthetic shapes; the demo's detector" \
		--data-recipe '$(subst $(BIN)/,,$(TINYSSD_DATA)) && $(subst $(BIN)/,,$(SHAPES24K_DATA))' \
		--command '$(subst $(BIN)/,,$(TINYSSD_TRAIN)) && $(subst $(BIN)/,,$(TINYSSD_FINETUNE))' \
		--heldout-recipe '$(HELDOUT_SHAPES)'
	$(DIGITS_DATA)
	$(DIGITS_TRAIN)
	$(BIN)/python tools/ship_weights.py digits-lenet runs/weights/digits-lenet runs/data/digits \
		--description "LeNet-5 for synthetic digits 0-9 (an offline MNIST stand-in)" \
		--data-recipe '$(subst $(BIN)/,,$(DIGITS_DATA))' --command '$(subst $(BIN)/,,$(DIGITS_TRAIN))'

bench: $(STAMP)
	$(BIN)/python benchmarks/detect_pipeline.py
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/anchors_speed.py
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf runs .pytest_cache
