// Package browsertest holds the end-to-end test that shows the proxy's
// answers to a real browser: headless Chromium (Debian's chromium package)
// loads a page whose <img> and <video> elements point at the proxy, once
// with the on-disk store and once with S3 (the versitygw stand-in, whose
// stored variants are reached through the proxy's 302), and reports what
// it decoded, animated, played and seeked. The videos are made at test
// time with ffmpeg, because testmedia's are only structurally valid.
//
// The package has no code of its own; it is a separate package so that its
// one Chromium launch runs beside the other packages' tests.
package browsertest
