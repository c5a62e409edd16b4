#!/usr/bin/env bash
# Benchmark lorafuse on a GPU machine that has no Rust toolchain (an NVIDIA driver, perhaps no
# Vulkan loader), next to PyTorch on the same GPU.
#
#   tools/gpu-bench.sh prepare [DIR]       here, with cargo and apt: build the release binary and put
#                                          it, xz-compressed, into DIR (default .gpu-bench, ignored by
#                                          git) with the Vulkan loader's .deb and the diffusers wheel
#   tools/gpu-bench.sh run [DIR] [OUT]     there, from the repository root: unpack the loader, run
#                                          `bench kernels --json`, `bench pipeline --size 512 --profile`,
#                                          `bench lora` and PyTorch's UNet step, and write every
#                                          result into OUT (default gpu-bench-out)
#
# DIR is about 25 MiB (the binary is ~19 MiB xz-compressed), so it travels with the working tree to a lent machine (`device run`
# with `carry: [".gpu-bench"]`: move tests/fixtures aside first). Record the numbers in
# BENCHMARKS.md with the GPU's name and driver.
set -euo pipefail

cmd=${1:-}
dir=${2:-.gpu-bench}

prepare() {
    cargo build --release --locked
    mkdir -p "$dir/debs" "$dir/whl"
    xz -T0 -9 -c target/release/lorafuse > "$dir/lorafuse.xz"
    cp tools/torch_unet_step.py "$dir/"
    # The loader only (the driver brings its ICD); amd64 whatever this machine is.
    local lists
    lists=$(mktemp -d)
    mkdir -p "$lists/partial"
    local o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$lists")
    apt-get "${o[@]}" update -qq
    (cd "$dir/debs" && apt-get "${o[@]}" download libvulkan1)
    # diffusers and the one requirement torch images usually lack (pure Python, any platform).
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$dir/whl" diffusers importlib_metadata
    du -sh "$dir"
}

run() {
    local out=${3:-gpu-bench-out}
    mkdir -p "$out"
    if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
        for f in "$dir"/debs/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    # Drivers mounted outside the standard folders (containers).
    for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json \
        /usr/share/vulkan/icd.d/nvidia_icd.json; do
        if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; break; fi
    done
    local bin=/tmp/lorafuse-gpu-bench
    xz -dc "$dir/lorafuse.xz" > "$bin"
    chmod +x "$bin"
    export LORAFUSE_CACHE_DIR=/tmp/lorafuse-cache
    (nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv || true) \
        | tee "$out/gpu.txt"
    "$bin" bench kernels --json -q > "$out/kernels.json" 2> "$out/kernels.log" || echo "bench kernels failed" >&2
    "$bin" bench pipeline --size 512 --profile -q > "$out/pipeline.txt" 2>&1 || echo "bench pipeline failed" >&2
    "$bin" bench lora --size 512 -q > "$out/lora.txt" 2>&1 || echo "bench lora failed" >&2
    if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
        local site=/tmp/gpu-bench-site
        python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$dir"/whl/*.whl
        PYTHONPATH=$site python3 "$dir/torch_unet_step.py" --size 512 > "$out/torch.txt" 2>&1 \
            || echo "torch step failed" >&2
    fi
    tail -n +1 "$out"/*.txt
}

case "$cmd" in
    prepare) prepare ;;
    run) run "$@" ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
esac
