// splitseg: the command-line interface. A thin client of the runtime library.
#include <malloc.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace {

const char* kUsage =
    "usage: splitseg <command> [options]\n"
    "\n"
    "commands:\n"
    "  encode   --model CKPT --image IMG --out BUNDLE.safetensors [--dtype f16|f32|bf16|int8]\n"
    "           [--json] [--threads N] [--precision f32|bf16]\n"
    "  encode   --model CKPT --image IMG_OR_FOLDER --store SPEC [--dtype ...] [--json]\n"
    "           (skips images the store already holds; progress on stderr)\n"
    "  segment  --model CKPT (--image IMG | --bundle BUNDLE) [--point X,Y,LABEL]...\n"
    "           [--box X0,Y0,X1,Y1] [--mask-input FILE.safetensors[:KEY]] [--multimask]\n"
    "           --out OUT.safetensors [--mask-png FILE] [--logits] [--json] [--threads N]\n"
    "  bench    --model CKPT [--image IMG] [--runs N] [--clicks N] [--threads N] [--json]\n"
    "           [--precision f32|bf16]  (bf16: the SAM/MobileSAM encoder's products in bfloat16\n"
    "           on AMX/AVX512-BF16; masks IoU >= 0.99 vs f32 on the golden cases)\n"
    "  models   synth --arch vit_b|vit_l|vit_h|mobilesam|sam2.1_hiera_t|s|b+|l --out FILE\n"
    "           inspect --model CKPT [--json]\n"
    "           convert --model CKPT --out FILE.safetensors\n"
    "           extract-decoder --model CKPT --out FILE [--dtype f16|f32]   (the browser's "
    "decoder)\n"
    "  cache    stats|verify|evict --store SPEC [--max-bytes N] [--json]\n"
    "           (verify drops corrupt bundles; evict trims memory and disk tiers to N bytes)\n"
    "  serve    [--host 127.0.0.1] [--port 8080] [--data-dir ./splitseg-data] [--model CKPT]\n"
    "           [--store SPEC] [--threads N] [--api-keys FILE] [--cors-origin ORIGIN]\n"
    "           [--max-body-mb N] [--max-points N] [--jobs sqlite:PATH|postgres:CONNINFO]\n"
    "           [--max-sessions N] [--max-sessions-per-tenant N] [--max-session-mb N]\n"
    "           [--session-ttl-s N] [--rate-limit PER_S] [--rate-burst N] [--quiet]\n"
    "           (HTTP API under /api/v1; model also from SPLITSEG_MODEL, jobs from\n"
    "           SPLITSEG_JOBS; API keys file: {\"keys\": {\"KEY\": \"tenant\"}})\n"
    "           [--decoder FILE]   (decoder weights for the browser, from extract-decoder)\n"
    "           [--web DIR|none]   (the web client at /; default SPLITSEG_WEB_DIR, else\n"
    "           web/dist of the repository holding the binary, else PREFIX/share/splitseg/web)\n"
    "           [--precision f32|bf16]  (the encoder's arithmetic, as for encode)\n"
    "           [--read-timeout-s 30] [--write-timeout-s 30] [--ws-idle-timeout-s 300]\n"
    "           [--encode-nice 10]  (the encode thread's nice increment: clicks come first)\n"
    "           [--compute-threads 0]  (decodes run here, in arrival order, off the io\n"
    "           threads; 0: one per core)\n"
    "           [--disk-threads 2]  (uploads, deletes, encodes, status, embedding downloads,\n"
    "           session starts and decodes that read a tier run here, off the io threads)\n"
    "           [--decode-threads 1]  (threads of a decode that runs alone; one beside\n"
    "           others; 0: all cores)\n"
    "\n"
    "Store SPEC: tiers in lookup order, comma-separated: mem:?max_bytes=256M,\n"
    "  disk:/path?max_bytes=10G, azure://HOST/ACCOUNT/CONTAINER?key=...,\n"
    "  s3://HOST/BUCKET?region=R&access=ID&secret=S (credentials also from\n"
    "  AZURE_STORAGE_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).\n"
    "\n"
    "Coordinates are original image pixels; LABEL 1 = foreground, 0 = background.\n";

}  // namespace

int main(int argc, char** argv) {
    using namespace splitseg::cli;
    // Activations of tens of MB are allocated and freed per layer; keeping them on the heap
    // instead of fresh mmaps avoids page-fault storms (measured 15-25% of encode time).
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
        std::fputs(kUsage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const std::string cmd = argv[1];
    const std::vector<std::string> rest(argv + 2, argv + argc);
    try {
        if (cmd == "encode") return cmd_encode(rest);
        if (cmd == "segment") return cmd_segment(rest);
        if (cmd == "bench") return cmd_bench(rest);
        if (cmd == "models") return cmd_models(rest);
        if (cmd == "cache") return cmd_cache(rest);
        if (cmd == "serve") return cmd_serve(rest);
        std::fprintf(stderr, "splitseg: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
        return 2;
    } catch (const UsageError& e) {
        std::fprintf(stderr, "splitseg %s: %s\n\n%s", cmd.c_str(), e.what(), kUsage);
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "splitseg %s: error: %s\n", cmd.c_str(), e.what());
        return 1;
    }
}
