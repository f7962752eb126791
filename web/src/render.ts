// Drawing the image with a mask in one of three views, and the exports built from the same
// drawing: the mask as PNG, the cut-out as PNG, the mask as COCO JSON (RLE).
import { rleCounts, rleToString } from './coco_rle.js';
import type { Box, Mask, Point } from './decoder';

export type View = 'overlay' | 'cutout' | 'erase';

const MASK_RGB = [30, 144, 255];

function canvas(width: number, height: number): HTMLCanvasElement {
  const c = document.createElement('canvas');
  c.width = width;
  c.height = height;
  return c;
}

// The mask as an opaque-where-inside RGBA layer (color for the overlay; alpha for compositing).
export function maskLayer(mask: Mask): HTMLCanvasElement {
  const layer = canvas(mask.width, mask.height);
  const pixels = new ImageData(mask.width, mask.height);
  for (let i = 0; i < mask.data.length; i++) {
    if (!mask.data[i]) continue;
    pixels.data.set(MASK_RGB, i * 4);
    pixels.data[i * 4 + 3] = 255;
  }
  layer.getContext('2d')!.putImageData(pixels, 0, 0);
  return layer;
}

// The image in a view. Cut-out keeps only the inside, erase only the outside (transparent
// elsewhere, so the page's checkerboard shows through).
export function drawView(ctx: CanvasRenderingContext2D, image: ImageBitmap, layer: HTMLCanvasElement | null, view: View): void {
  const { width, height } = ctx.canvas;
  ctx.save();
  ctx.clearRect(0, 0, width, height);
  if (!layer) {
    ctx.drawImage(image, 0, 0);
  } else if (view === 'overlay') {
    ctx.drawImage(image, 0, 0);
    ctx.globalAlpha = 0.5;
    ctx.drawImage(layer, 0, 0);
  } else {
    ctx.drawImage(layer, 0, 0);
    ctx.globalCompositeOperation = view === 'cutout' ? 'source-in' : 'source-out';
    ctx.drawImage(image, 0, 0);
  }
  ctx.restore();
}

export function drawPrompts(ctx: CanvasRenderingContext2D, points: Point[], box: Box | null): void {
  const r = Math.max(4, Math.round(Math.max(ctx.canvas.width, ctx.canvas.height) / 150));
  ctx.save();
  ctx.lineWidth = Math.max(2, r / 2);
  if (box) {
    ctx.strokeStyle = '#ffd700';
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
  for (const [x, y, label] of points) {
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = label ? '#2ecc40' : '#ff4136';
    ctx.fill();
    ctx.strokeStyle = '#fff';
    ctx.stroke();
  }
  ctx.restore();
}

function png(c: HTMLCanvasElement): Promise<Blob> {
  return new Promise((resolve, reject) => c.toBlob((b) => (b ? resolve(b) : reject(new Error('PNG encoding failed'))), 'image/png'));
}

// White inside, black outside, opaque.
export function maskPng(mask: Mask): Promise<Blob> {
  const c = canvas(mask.width, mask.height);
  const pixels = new ImageData(mask.width, mask.height);
  for (let i = 0; i < mask.data.length; i++) {
    const v = mask.data[i] ? 255 : 0;
    pixels.data[i * 4] = pixels.data[i * 4 + 1] = pixels.data[i * 4 + 2] = v;
    pixels.data[i * 4 + 3] = 255;
  }
  c.getContext('2d')!.putImageData(pixels, 0, 0);
  return png(c);
}

export function cutoutPng(image: ImageBitmap, mask: Mask): Promise<Blob> {
  const c = canvas(mask.width, mask.height);
  drawView(c.getContext('2d')!, image, maskLayer(mask), 'cutout');
  return png(c);
}

function bbox(mask: Mask): [number, number, number, number] {
  let x0 = mask.width, y0 = mask.height, x1 = -1, y1 = -1;
  for (let y = 0; y < mask.height; y++) {
    for (let x = 0; x < mask.width; x++) {
      if (!mask.data[y * mask.width + x]) continue;
      x0 = Math.min(x0, x);
      y0 = Math.min(y0, y);
      x1 = Math.max(x1, x);
      y1 = Math.max(y1, y);
    }
  }
  return x1 < 0 ? [0, 0, 0, 0] : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
}

// One image, one annotation: the mask as COCO compressed RLE, with its area, bbox and score.
export function cocoJson(fileName: string, imageId: string, mask: Mask): string {
  const counts = rleToString(rleCounts(mask.data, mask.width, mask.height));
  return JSON.stringify(
    {
      images: [{ id: 1, file_name: fileName, width: mask.width, height: mask.height, splitseg_id: imageId }],
      categories: [{ id: 1, name: 'object' }],
      annotations: [
        {
          id: 1,
          image_id: 1,
          category_id: 1,
          segmentation: { size: [mask.height, mask.width], counts },
          area: mask.area,
          bbox: bbox(mask),
          iscrowd: 0,
          score: mask.score,
        },
      ],
    },
    null,
    1,
  );
}
