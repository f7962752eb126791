// The OpenAPI 3 document served at /api/v1/openapi.json. A unit test checks that it lists exactly
// the routes the API serves.
#include "service/api.h"

namespace splitseg {

const char* Api::openapi_document() {
    return R"json({
 "openapi": "3.0.3",
 "info": {
  "title": "splitseg",
  "version": "1",
  "description": "Interactive image segmentation: encode once, decode per click. Errors are {\"error\":{\"code\",\"message\"}}. With API keys configured, send Authorization: Bearer KEY or X-API-Key."
 },
 "components": {
  "securitySchemes": {
   "bearer": {
    "type": "http",
    "scheme": "bearer"
   },
   "apiKey": {
    "type": "apiKey",
    "in": "header",
    "name": "X-API-Key"
   }
  },
  "responses": {
   "Error": {
    "description": "error",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   }
  },
  "schemas": {
   "Error": {
    "type": "object",
    "properties": {
     "error": {
      "type": "object",
      "properties": {
       "code": {
        "type": "string",
        "enum": [
         "bad_request",
         "invalid_json",
         "invalid_image",
         "image_too_large",
         "body_too_large",
         "too_many_points",
         "unauthorized",
         "not_found",
         "no_route",
         "method_not_allowed",
         "not_encoded",
         "nothing_to_undo", "upgrade_required",
         "range_not_satisfiable",
         "no_model",
         "too_many_sessions",
         "rate_limited",
         "invalid_multipart",
         "part_too_large",
         "internal"
        ]
       },
       "message": {
        "type": "string"
       }
      }
     }
    }
   },
   "Image": {
    "type": "object",
    "properties": {
     "id": {
      "type": "string"
     },
     "width": {
      "type": "integer"
     },
     "height": {
      "type": "integer"
     },
     "status": {
      "type": "string",
      "enum": [
       "pending",
       "processing",
       "completed",
       "failed",
       "missing"
      ]
     },
     "error": {
      "type": "string"
     }
    }
   },
   "Prompts": {
    "type": "object",
    "properties": {
     "points": {
      "type": "array",
      "items": {
       "type": "array",
       "items": {
        "type": "number"
       },
       "minItems": 3,
       "maxItems": 3
      },
      "description": "[x, y, label] in original pixels; label 1 foreground, 0 background"
     },
     "box": {
      "type": "array",
      "items": {
       "type": "number"
      },
      "minItems": 4,
      "maxItems": 4
     },
     "multimask": {
      "type": "boolean"
     },
     "best_only": {
      "type": "boolean",
      "description": "with multimask: only the candidate of highest predicted IoU is decoded to the image size and returned (the interactive path)"
     },
     "output": {
      "type": "string",
      "description": "mask encoding; binary only on a session's WebSocket (see /api/v1/sessions/{sid}/ws), elsewhere 400",
      "enum": [
       "rle",
       "png",
       "polygon",
       "binary",
       "none"
      ]
     },
     "logits": {
      "type": "boolean"
     },
     "mask_input": {
      "type": "object",
      "description": "low-res logits of an earlier decode, as logits: true returns them; in a session it replaces the previous step's mask",
      "properties": {
       "shape": {
        "type": "array",
        "items": {
         "type": "integer"
        }
       },
       "f32_base64": {
        "type": "string",
        "format": "byte",
        "description": "256x256 float32 little-endian"
       }
      },
      "required": [
       "f32_base64"
      ]
     }
    }
   },
   "Batch": {
    "type": "object",
    "properties": {
     "batch_id": {
      "type": "string"
     },
     "total": {
      "type": "integer"
     },
     "counts": {
      "type": "object",
      "description": "images by status: pending, processing, completed, failed, missing, not_found"
     },
     "done": {
      "type": "boolean",
      "description": "every image is completed, failed or gone"
     },
     "progress": {
      "type": "number",
      "description": "fraction of the images finished (completed or failed)"
     },
     "images": {
      "type": "array",
      "items": {
       "$ref": "#/components/schemas/Image"
      }
     }
    }
   },
   "Masks": {
    "type": "object",
    "properties": {
     "masks": {
      "type": "array",
      "items": {
       "type": "object",
       "properties": {
        "score": {
         "type": "number"
        },
        "bbox": {
         "type": "array",
         "items": {
          "type": "integer"
         }
        },
        "area": {
         "type": "integer"
        },
        "rle": {
         "type": "object",
         "properties": {
          "size": {
           "type": "array",
           "items": {
            "type": "integer"
           }
          },
          "counts": {
           "type": "string"
          }
         }
        },
        "png": {
         "type": "string",
         "format": "byte"
        },
        "frame": {
         "type": "integer",
         "description": "output binary: the index of this mask's binary frame among those following the reply's text frame"
        },
        "polygons": {
         "type": "array",
         "description": "outer outlines, each a flat list x0, y0, x1, y1, ... (COCO segmentation)",
         "items": {
          "type": "array",
          "items": {
           "type": "number"
          }
         }
        },
        "holes": {
         "type": "array",
         "description": "for each outline in polygons, the rings of its holes (flat lists, counter-clockwise on screen)",
         "items": {
          "type": "array",
          "items": {
           "type": "array",
           "items": {
            "type": "number"
           }
          }
         }
        },
        "low_res_logits": {
         "type": "object"
        }
       }
      }
     },
     "best": {
      "type": "integer"
     },
     "latency_ms": {
      "type": "number"
     },
     "steps": {
      "type": "integer"
     }
    }
   },
   "Session": {
    "type": "object",
    "properties": {
     "session_id": {
      "type": "string"
     },
     "image_id": {
      "type": "string"
     },
     "steps": {
      "type": "integer"
     },
     "points": {
      "type": "array"
     },
     "box": {
      "type": "array",
      "nullable": true
     },
     "result": {
      "$ref": "#/components/schemas/Masks"
     }
    }
   }
  }
 },
 "security": [
  {
   "bearer": []
  },
  {
   "apiKey": []
  },
  {}
 ],
 "paths": {
  "/healthz": {
   "get": {
    "summary": "Liveness",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "security": []
   }
  },
  "/readyz": {
   "get": {
    "summary": "Readiness: model loaded and job database reachable",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     },
     "503": {
      "description": "not ready"
     }
    },
    "security": []
   }
  },
  "/metrics": {
   "get": {
    "summary": "Prometheus metrics",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "security": []
   }
  },
  "/api/v1/openapi.json": {
   "get": {
    "summary": "This document",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "security": []
   }
  },
  "/api/v1/images": {
   "post": {
    "summary": "Upload an image (raw JPEG, PNG or WebP body, or multipart/form-data with one file part) and queue its encode",
    "description": "multipart/form-data (RFC 7578): the image is the one part whose Content-Disposition has a filename; other parts are ignored (at most 16 parts, 8 KiB of headers and 64 KiB of data per non-file part). A malformed body, no file part or two file parts is 400 invalid_multipart; a part over its limit is 413 part_too_large. The id is the same as for the raw upload of the same file. Only the image header is checked here (format, size, the pixel limit: 400 invalid_image, 413 image_too_large); image data damaged past the header is found by the encode, and the image's status then becomes failed with an error message.",
    "responses": {
     "201": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     },
     "200": {
      "description": "already uploaded"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "image/*": {
       "schema": {
        "type": "string",
        "format": "binary"
       }
      },
      "multipart/form-data": {
       "schema": {
        "type": "object",
        "properties": {
         "image": {
          "type": "string",
          "format": "binary",
          "description": "the file part (any field name; it must have a filename)"
         }
        }
       }
      }
     }
    }
   },
   "get": {
    "summary": "Bulk status",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "ids",
      "in": "query",
      "required": true,
      "schema": {
       "type": "string"
      },
      "description": "comma-separated image ids"
     }
    ]
   }
  },
  "/api/v1/images/{id}": {
   "get": {
    "summary": "Image status",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      },
      "description": "image content hash"
     }
    ]
   },
   "delete": {
    "summary": "Delete an image",
    "responses": {
     "204": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      },
      "description": "image content hash"
     }
    ]
   }
  },
  "/api/v1/images/{id}/encode": {
   "post": {
    "summary": "Encode again",
    "responses": {
     "202": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      },
      "description": "image content hash"
     }
    ]
   }
  },
  "/api/v1/images/{id}/embedding": {
   "get": {
    "summary": "The embedding bundle (safetensors); ETag, immutable caching, Range",
    "description": "Range: one byte range (bytes=a-b, a- or -n) answers 206 with Content-Range, an unsatisfiable or malformed one 416; another unit or several ranges are ignored (200, the whole bundle).",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     },
     "206": {
      "description": "partial"
     },
     "304": {
      "description": "not modified"
     },
     "409": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      },
      "description": "image content hash"
     }
    ]
   },
   "head": {
    "summary": "Whether the embedding exists",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     },
     "409": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      },
      "description": "image content hash"
     }
    ]
   }
  },
  "/api/v1/models/{name}/decoder": {
   "get": {
    "summary": "The decoder weights for the browser's WASM decoder (splitseg models extract-decoder), for the loaded model; ETag, immutable by hash",
    "responses": {
     "200": {
      "description": "safetensors",
      "content": {
       "application/octet-stream": {}
      }
     },
     "304": {
      "description": "not modified"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "name",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      },
      "description": "the model hash, or current"
     }
    ]
   }
  },
  "/api/v1/images/{id}/infer": {
   "post": {
    "summary": "Masks for prompts (stateless)",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     },
     "409": {
      "$ref": "#/components/responses/Error"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/Prompts"
       }
      }
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      },
      "description": "image content hash"
     }
    ]
   }
  },
  "/api/v1/jobs": {
   "post": {
    "summary": "Batch encode: queue the encodes of many uploaded images at once",
    "responses": {
     "202": {
      "description": "accepted",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Batch"
        }
       }
      }
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "properties": {
         "image_ids": {
          "type": "array",
          "items": {
           "type": "string"
          },
          "maxItems": 1000
         },
         "force": {
          "type": "boolean",
          "description": "encode again even when cached"
         }
        },
        "required": [
         "image_ids"
        ]
       }
      }
     }
    }
   }
  },
  "/api/v1/jobs/{id}": {
   "get": {
    "summary": "A batch's progress",
    "responses": {
     "200": {
      "description": "success",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Batch"
        }
       }
      }
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      },
      "description": "batch id"
     }
    ]
   }
  },
  "/api/v1/sessions": {
   "post": {
    "summary": "Start an interactive session on an encoded image",
    "responses": {
     "201": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     },
     "409": {
      "$ref": "#/components/responses/Error"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "properties": {
         "image_id": {
          "type": "string"
         }
        },
        "required": [
         "image_id"
        ]
       }
      }
     }
    }
   }
  },
  "/api/v1/sessions/{sid}": {
   "get": {
    "summary": "Session state",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "sid",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   },
   "delete": {
    "summary": "Close a session",
    "responses": {
     "204": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "sid",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  },
  "/api/v1/sessions/{sid}/prompts": {
   "post": {
    "summary": "Add points or a box; refines the previous mask",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/Prompts"
       }
      }
     }
    },
    "parameters": [
     {
      "name": "sid",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  },
  "/api/v1/sessions/{sid}/undo": {
   "post": {
    "summary": "Undo the last prompt",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "sid",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  },
  "/api/v1/sessions/{sid}/reset": {
   "post": {
    "summary": "Drop every prompt",
    "responses": {
     "200": {
      "description": "success"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "sid",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  },
  "/api/v1/sessions/{sid}/ws": {
   "get": {
    "summary": "WebSocket upgrade for the session. Messages (JSON text): {\"type\":\"prompts\"|\"undo\"|\"reset\"|\"state\", \"id\"?, ...the session route's body}; each is answered with {\"type\", \"id\", \"status\", \"seq\", \"body\"}, body as the matching HTTP route returns it.",
    "description": "Binary masks: a prompts message with \"output\": \"binary\" is answered by its JSON text frame, which then has \"frames\": n and, in each of body.masks, \"frame\": k (scores, bbox, area as usual), followed by n binary frames, one per mask, before the next reply. An undo that restores a step made so brings that step's frames again. Binary frame layout, integers little-endian: bytes 0-3 magic \"SSMK\"; 4-5 uint16 version (1); 6-7 uint16 encoding; 8-11 uint32 seq (the text frame's seq); 12-15 uint32 mask index in body.masks; 16-19 uint32 width; 20-23 uint32 height; 24-27 uint32 payload bytes; 28-31 reserved (0); then the payload. Encoding 1, row runs: uint32 run lengths over the row-major pixels (ImageData order), alternating outside/inside starting outside (the first may be 0), summing to width*height: paint each inside run with one fill on a Uint32Array view of the ImageData. Encoding 2, bitmap: pixel i (row-major) is bit i%8 of payload byte i/8, no row padding; the server sends it instead of runs whenever runs would take more bytes, so a frame holds at most width*height/8 bytes after its header.",
    "responses": {
     "101": {
      "description": "switching protocols"
     },
     "426": {
      "$ref": "#/components/responses/Error"
     },
     "4XX": {
      "$ref": "#/components/responses/Error"
     }
    },
    "parameters": [
     {
      "name": "sid",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  }
 }
})json";
}

}  // namespace splitseg
