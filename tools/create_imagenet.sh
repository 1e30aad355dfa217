#!/usr/bin/env sh
# Create the imagenet lmdb inputs (Caffe's examples/imagenet/create_imagenet.sh, through netdef).
# N.B. set the path to the imagenet train + val data dirs, here or in the environment:
#   TRAIN_DATA_ROOT=/data/train/ VAL_DATA_ROOT=/data/val/ RESIZE=true tools/create_imagenet.sh
# NETDEF is the netdef command (default: netdef from PATH, or $TOOLS/netdef when TOOLS is set),
# e.g. NETDEF=.venv/bin/netdef or NETDEF="python -m netdef.cli".
set -e

EXAMPLE=${EXAMPLE:-examples/imagenet}
DATA=${DATA:-data/ilsvrc12}
TOOLS=${TOOLS:-}
NETDEF=${NETDEF:-${TOOLS:+$TOOLS/}netdef}

TRAIN_DATA_ROOT=${TRAIN_DATA_ROOT:-/path/to/imagenet/train/}
VAL_DATA_ROOT=${VAL_DATA_ROOT:-/path/to/imagenet/val/}

# Set RESIZE=true to resize the images to 256x256. Leave as false if images have
# already been resized using another tool.
RESIZE=${RESIZE:-false}
if $RESIZE; then
  RESIZE_HEIGHT=256
  RESIZE_WIDTH=256
else
  RESIZE_HEIGHT=0
  RESIZE_WIDTH=0
fi

if [ ! -d "$TRAIN_DATA_ROOT" ]; then
  echo "Error: TRAIN_DATA_ROOT is not a path to a directory: $TRAIN_DATA_ROOT"
  echo "Set the TRAIN_DATA_ROOT variable in create_imagenet.sh to the path" \
       "where the ImageNet training data is stored."
  exit 1
fi

if [ ! -d "$VAL_DATA_ROOT" ]; then
  echo "Error: VAL_DATA_ROOT is not a path to a directory: $VAL_DATA_ROOT"
  echo "Set the VAL_DATA_ROOT variable in create_imagenet.sh to the path" \
       "where the ImageNet validation data is stored."
  exit 1
fi

echo "Creating train lmdb..."

$NETDEF convert-imageset \
    --resize_height=$RESIZE_HEIGHT \
    --resize_width=$RESIZE_WIDTH \
    --shuffle \
    "$TRAIN_DATA_ROOT" \
    "$DATA/train.txt" \
    "$EXAMPLE/ilsvrc12_train_lmdb"

echo "Creating val lmdb..."

$NETDEF convert-imageset \
    --resize_height=$RESIZE_HEIGHT \
    --resize_width=$RESIZE_WIDTH \
    --shuffle \
    "$VAL_DATA_ROOT" \
    "$DATA/val.txt" \
    "$EXAMPLE/ilsvrc12_val_lmdb"

echo "Done."
