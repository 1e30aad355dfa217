#!/usr/bin/env sh
# Compute the mean image from the imagenet training lmdb
# (Caffe's examples/imagenet/make_imagenet_mean.sh, through netdef).
# EXAMPLE, DATA, TOOLS and NETDEF may be set in the environment, as for create_imagenet.sh.
set -e

EXAMPLE=${EXAMPLE:-examples/imagenet}
DATA=${DATA:-data/ilsvrc12}
TOOLS=${TOOLS:-}
NETDEF=${NETDEF:-${TOOLS:+$TOOLS/}netdef}

$NETDEF compute-image-mean "$EXAMPLE/ilsvrc12_train_lmdb" \
  "$DATA/imagenet_mean.binaryproto"

echo "Done."
