"""Deployment pipeline: search a subnet -> export to ONNX (validated) -> int8 quantization -> generate.

    python examples/deploy_onnx.py [--ratio 0.8] [--workdir deploy-smollm2] [--fuse-attention] [--device cuda]

Uses Optimum's own quantizer (``ORTQuantizer``) on the exported subnet, then ONNX Runtime for generation,
exactly as ``optimum-cli subnet export`` + ``optimum-cli onnxruntime quantize`` would.
"""

import argparse
import logging
from pathlib import Path

import optimum_subnet  # noqa: F401  registers the subnet types with transformers and Optimum
from optimum_subnet import OnnxExportConfig, ORTSubnetModelForCausalLM, SubnetConfig, SubnetOptimizer, export_onnx


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--workdir", default="deploy-smollm2")
    parser.add_argument("--preset", default="auto", choices=["auto", "fast", "paper"])
    parser.add_argument("--fuse-attention", action="store_true")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.workdir)

    subnet_dir = SubnetOptimizer.from_pretrained("smollm2-135m").optimize(
        SubnetConfig.preset(args.preset, args.ratio), work / "subnet", overwrite=True)
    onnx_dir = export_onnx(subnet_dir, work / "onnx",
                           OnnxExportConfig(device=args.device, dtype="fp16" if args.device == "cuda" else "fp32",
                                            fuse_attention=args.fuse_attention), overwrite=True)

    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(onnx_dir)
    quantized_dir = work / "onnx-int8"
    quantizer.quantize(AutoQuantizationConfig.avx2(is_static=False), quantized_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (onnx_dir / name).is_file():
            (quantized_dir / name).write_bytes((onnx_dir / name).read_bytes())

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(onnx_dir)
    prompt = tokenizer("The history of the Roman Empire", return_tensors="pt")
    for folder, file_name in ((onnx_dir, "model.onnx"), (quantized_dir, "model_quantized.onnx")):
        model = ORTSubnetModelForCausalLM.from_pretrained(folder, file_name=file_name)
        out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
        logging.info("%s: %r", file_name, tokenizer.decode(out[0], skip_special_tokens=True))


if __name__ == "__main__":
    main()
