// Helpers the benchmark scripts share, without dependencies, so that Node scripts import them by
// path and bench/web's page worker by URL (bench/web/bench.mjs serves this folder at /shared/).

// The value after --name on the command line, or fallback; throws without either.
export function option(name, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    if (i < 0) {
        if (fallback === undefined) throw new Error(`missing --${name}`);
        return fallback;
    }
    return process.argv[i + 1];
}

// IoU of two masks given as arrays of the same length, non-zero = inside (1 when both are empty).
export function maskIou(a, b) {
    let inter = 0, union = 0;
    for (let i = 0; i < a.length; ++i) {
        const x = a[i] !== 0, y = b[i] !== 0;
        inter += x && y;
        union += x || y;
    }
    return union ? inter / union : 1;
}
