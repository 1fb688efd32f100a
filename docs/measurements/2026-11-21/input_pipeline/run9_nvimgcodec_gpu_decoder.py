# The GPU decoder that run 9 measured (`--gpu-decoder nvimgcodec`, ecanet/gpu_decode.py in the working tree of
# 2026-11-21 16:08 UTC), kept for traceability. It was removed again: run 10 found nvImageCodec's GPU decoders,
# the JPEG engines included, no faster than torchvision's nvJPEG beside a busy GPU, and run 9's loader
# (four decode threads, one decoder each, region decode on) gave 940 img/s. GpuAugment called it as
# decoder(jpegs, boxes) and got (3, h, w) uint8 CUDA tensors cut to each box. Not maintained.
class NvImageCodecDecoder:
    def __init__(self, device, region_decode=True, cpu_threads=2):
        from nvidia import nvimgcodec
        self._codec, self.device = nvimgcodec, device
        self.region_decode, self.cpu_threads = region_decode, cpu_threads
        self._params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB,
                                               allow_any_depth=False)
        self._local = threading.local()
        self._check_backends()  # decodes one 16x16 JPEG, raises ConfigError if the output is not on the device

    def _decoder(self):
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            codec = self._codec
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            kinds = (codec.BackendKind.HW_GPU_ONLY, codec.BackendKind.GPU_ONLY, codec.BackendKind.HYBRID_CPU_GPU)
            decoder = codec.Decoder(device_id=index, max_num_cpu_threads=self.cpu_threads,
                                    backends=[codec.Backend(kind) for kind in kinds])
            self._local.decoder = decoder
        return decoder

    def __call__(self, jpegs, boxes):
        codec = self._codec
        streams = []
        for jpeg, box in zip(jpegs, boxes):
            stream = codec.CodeStream(jpeg.numpy())
            if box is not None and self.region_decode:
                top, left, h, w = box
                stream = stream.get_sub_code_stream(region=codec.Region(top, left, top + h, left + w))
            streams.append(stream)
        cuda_stream = torch.cuda.current_stream(self.device).cuda_stream
        decoded = self._decoder().decode(streams, params=self._params, cuda_stream=cuda_stream)
        out = []
        for image, box in zip(decoded, boxes):
            if image is None:
                out.append(None)
                continue
            chw = torch.from_dlpack(image).permute(2, 0, 1)     # (3, h, w), ordered on the caller's stream
            out.append(chw if self.region_decode else cut_box(chw, box))
        return out
