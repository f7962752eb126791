// --pre-js of the WASM module. Under Node, the ES6 module Debian's emscripten 3.1.6 writes still
// calls require() and reads __dirname, which ES modules lack, and would fetch() the .wasm by
// path: define both from the module's URL and read the .wasm beside it. Needs
// process.getBuiltinModule (Node >= 20.16). Browsers and workers skip all of this.
if (typeof process == 'object' && typeof process.getBuiltinModule == 'function') {
    var require = process.getBuiltinModule('module').createRequire(_scriptDir);
    var __dirname = require('path').dirname(require('url').fileURLToPath(_scriptDir));
    if (!Module['wasmBinary'] && !Module['locateFile'])
        Module['wasmBinary'] = require('fs').readFileSync(__dirname + '/splitseg_decoder.wasm');
}
