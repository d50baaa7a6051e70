// The reference media proxy's emoji/avatar pipeline with its WebP settings
// (webpDefault), shared by the baseline server and its in-process limit so
// the two always measure the same work.
import sharp from 'sharp';

const webpDefault = {
  quality: 77,
  alphaQuality: 95,
  lossless: false,
  nearLossless: false,
  smartSubsample: true,
  mixed: true,
  effort: 2,
};

// resizeToHeight makes a WebP at most height px high, animation kept.
// fastShrinkOnLoad=false makes sharp leave a factor of two for the resize
// after a JPEG's shrink-on-load, as libvips' thumbnail does.
export const resizeToHeight = (buf, height, fastShrinkOnLoad = true) =>
  sharp(buf, { animated: true })
    .resize({ height, withoutEnlargement: true, fastShrinkOnLoad })
    .webp(webpDefault)
    .toBuffer();
