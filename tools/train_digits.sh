#!/usr/bin/env bash
# Caffe's whole workflow, end to end, on real images that ship with scikit-learn (no network):
# the 1,797 handwritten digits written out as PNG files with list files, converted to LMDB
# (convert-imageset, upscaled to 28x28), their mean image (compute-image-mean), LeNet trained
# by the solver with test phases and snapshots (train), scored (test), held-out images
# classified (classify), and the training curve drawn as a PNG.
# Run from anywhere; everything is written under runs/digits/ of the repository, the paths
# zoo/digits/{solver,train_val}.prototxt name. NETDEF and PYTHON override the programs used.
set -euo pipefail
cd "$(dirname "$0")/.."
NETDEF=${NETDEF:-.venv/bin/netdef}
PYTHON=${PYTHON:-.venv/bin/python}
RUN=runs/digits
IMAGES=$RUN/images
ITER=$(sed -n 's/^max_iter: *//p' zoo/digits/solver.prototxt)

rm -rf "$RUN"
mkdir -p "$RUN"

echo "== Writing the digits as images"
"$PYTHON" tools/export_digits.py "$IMAGES"

echo "== Creating the LMDBs (convert-imageset)"
"$NETDEF" convert-imageset --gray --shuffle --resize_height 32 --resize_width 32 \
  "$IMAGES/" "$IMAGES/train.txt" "$RUN/train_lmdb"
"$NETDEF" convert-imageset --gray --resize_height 32 --resize_width 32 \
  "$IMAGES/" "$IMAGES/test.txt" "$RUN/test_lmdb"

echo "== Computing the mean image (compute-image-mean)"
"$NETDEF" compute-image-mean "$RUN/train_lmdb" "$RUN/mean.binaryproto"

echo "== Training LeNet (train)"
"$NETDEF" train --solver zoo/digits/solver.prototxt

WEIGHTS=$RUN/digits_lenet_iter_$ITER.caffemodel
echo "== Scoring the held-out digits (test)"
"$NETDEF" test --model zoo/digits/train_val.prototxt --weights "$WEIGHTS" --iterations 13

echo "== Classifying held-out images (classify)"
echo "the first five held-out digits and their true labels:"
head -5 "$IMAGES/test.txt"
mapfile -t HELD_OUT < <(head -5 "$IMAGES/test.txt" | cut -d' ' -f1)
"$NETDEF" classify --model zoo/digits/deploy.prototxt --weights "$WEIGHTS" --mean "$RUN/mean.binaryproto" \
  --labels "$IMAGES/labels.txt" --images-dim 32,32 --input-scale 0.00390625 --center-only \
  "${HELD_OUT[@]/#/$IMAGES/}"

echo "== Artifacts"
echo "images and list files: $IMAGES/ (train.txt, test.txt, labels.txt)"
echo "databases:             $RUN/train_lmdb, $RUN/test_lmdb"
echo "mean image:            $RUN/mean.binaryproto"
echo "weights and state:     $WEIGHTS, ${WEIGHTS%.caffemodel}.solverstate (and the snapshots beside them)"
echo "training log (CSV):     $RUN/digits_lenet_log.csv"
echo "TensorBoard events:    $RUN/digits_lenet_tensorboard/"
echo "training curve (PNG):  $RUN/digits_lenet_plot.png"
