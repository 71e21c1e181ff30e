//! Thumbnails: which standard size answers a request, and how one is made, safely.
//!
//! Requests are mapped onto the spec's five standard sizes ([`STANDARD_SIZES`]), so that
//! each image has at most a handful of thumbnails to cache whatever clients ask for. The
//! chosen size is never smaller than the request where one is big enough, and an image is
//! never enlarged: when it is no larger than the size, the original is used.
//!
//! Untrusted images are decoded with care ([`make_thumbnail`]): the format is sniffed from the
//! bytes (not taken from the uploader's `Content-Type`), only PNG, JPEG, GIF and WebP are
//! decoded, the dimensions are read from the header and refused above a pixel limit before
//! anything is decoded, and the decoder runs with `image::Limits` so that a file whose header
//! lies cannot allocate more than the limit either. A decompression bomb is refused with
//! `M_TOO_LARGE` without its pixels ever being allocated.
//!
//! Animated thumbnails: when the client asks for one (`animated=true`) and the original is an
//! animated GIF, WebP or PNG larger than the size, its frames are resized one at a time and
//! encoded as an animated GIF, keeping at most [`DecodeLimits::max_frames`] frames and
//! decoding at most [`ANIMATED_PIXEL_BUDGET`] pixels in all. Otherwise (or when fewer than two
//! frames come out) the thumbnail is a still image of the first frame.

use std::io::Cursor;

use image::{
    AnimationDecoder, DynamicImage, Frame, Frames, ImageDecoder, ImageError, ImageFormat, ImageReader,
    codecs::gif::{GifEncoder, Repeat},
    imageops::FilterType,
    metadata::Orientation,
};
use ranvier_core::{Error, Result};

/// How a thumbnail fits the requested box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThumbnailMethod {
    /// Exactly the requested aspect ratio, cropping what sticks out.
    Crop,
    /// The image's own aspect ratio, fitting inside the box.
    Scale,
}

impl ThumbnailMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// One thumbnail size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

const fn size(width: u32, height: u32, method: ThumbnailMethod) -> ThumbnailSize {
    ThumbnailSize { width, height, method }
}

/// The sizes the spec recommends, smallest first within each method.
pub const STANDARD_SIZES: [ThumbnailSize; 5] = [
    size(32, 32, ThumbnailMethod::Crop),
    size(96, 96, ThumbnailMethod::Crop),
    size(320, 240, ThumbnailMethod::Scale),
    size(640, 480, ThumbnailMethod::Scale),
    size(800, 600, ThumbnailMethod::Scale),
];

/// The standard size that answers a request for `width`×`height` with `method`: the
/// smallest of that method at least as large in both dimensions. A crop larger than every
/// crop size is answered with a scale (as cropping to a small size would return less than
/// asked), and a scale larger than every size with the largest.
pub fn choose_size(width: u32, height: u32, method: ThumbnailMethod) -> ThumbnailSize {
    let covering = |method: ThumbnailMethod| {
        STANDARD_SIZES.iter().copied().find(|s| s.method == method && s.width >= width && s.height >= height)
    };
    covering(method).or_else(|| covering(ThumbnailMethod::Scale)).unwrap_or(STANDARD_SIZES[STANDARD_SIZES.len() - 1])
}

/// The most pixels decoded for one animated thumbnail, over all its frames.
pub const ANIMATED_PIXEL_BUDGET: u64 = 64_000_000;

/// Bounds on what is decoded.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Images with more pixels are refused before decoding.
    pub max_pixels: u64,
    /// The most memory the decoder may allocate.
    pub max_alloc: u64,
    /// The most frames an animated thumbnail keeps.
    pub max_frames: usize,
}

impl DecodeLimits {
    /// Limits for images of up to `max_pixels` pixels: room for 8 bytes per pixel (16-bit
    /// RGBA, the widest PNG) plus a margin for the decoder's own buffers.
    pub fn for_pixels(max_pixels: u64, max_frames: usize) -> Self {
        Self { max_pixels, max_alloc: max_pixels.saturating_mul(8).saturating_add(64 * 1024 * 1024), max_frames }
    }
}

/// What answers a thumbnail request.
#[derive(Debug)]
pub enum Thumbnail {
    /// The original is small enough (and may be served as it is); its sniffed type.
    Original { content_type: &'static str },
    /// A new image.
    Generated { bytes: Vec<u8>, content_type: &'static str, width: u32, height: u32 },
}

/// The error for content that cannot be thumbnailed (what the spec's example gives).
fn cannot_thumbnail() -> Error {
    Error::unknown("Cannot generate thumbnails for the requested content")
}

fn too_large_to_thumbnail() -> Error {
    Error::too_large("Content is too large to thumbnail")
}

fn decode_error(error: ImageError) -> Error {
    match error {
        ImageError::Limits(_) => too_large_to_thumbnail(),
        _ => cannot_thumbnail(),
    }
}

fn mime_of(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "image/png",
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Gif => "image/gif",
        ImageFormat::WebP => "image/webp",
        _ => "application/octet-stream",
    }
}

/// Make (or choose the original as) the thumbnail of `bytes` at `target`. `animated` is the
/// client's wish for an animated thumbnail: animated originals small enough are then served
/// as they are; otherwise only still images are returned. CPU-bound: call it from a blocking
/// task.
pub fn make_thumbnail(bytes: &[u8], target: ThumbnailSize, animated: bool, limits: DecodeLimits) -> Result<Thumbnail> {
    let format = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| cannot_thumbnail())?
        .format()
        .filter(|format| matches!(format, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP))
        .ok_or_else(cannot_thumbnail)?;

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(decoder_limits.clone());
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(too_large_to_thumbnail());
    }
    if width == 0 || height == 0 {
        return Err(cannot_thumbnail());
    }
    // The decoder must not allocate for more than the header announced, nor more than allowed.
    decoder_limits.max_image_width = Some(width);
    decoder_limits.max_image_height = Some(height);
    decoder_limits.reserve(decoder.total_bytes()).map_err(decode_error)?;
    decoder.set_limits(decoder_limits).map_err(decode_error)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (width, height) = match orientation {
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH => {
            (height, width)
        }
        _ => (width, height),
    };

    let fits = width <= target.width && height <= target.height;
    if fits && (animated || format == ImageFormat::Jpeg || !is_animated(bytes, format, limits)) {
        return Ok(Thumbnail::Original { content_type: mime_of(format) });
    }
    if animated
        && format != ImageFormat::Jpeg
        && is_animated(bytes, format, limits)
        && let Some(thumbnail) = animated_thumbnail(bytes, format, target, limits)?
    {
        return Ok(thumbnail);
    }

    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    // An animated original that must be served still and fits: its first frame, as it is.
    let resized = if fits { image } else { fit(image, target) };
    encode(resized, format)
}

/// `image` resized (never enlarged) to answer `target`.
fn fit(image: DynamicImage, target: ThumbnailSize) -> DynamicImage {
    let (width, height) = (image.width(), image.height());
    if width <= target.width && height <= target.height {
        return image;
    }
    match target.method {
        ThumbnailMethod::Scale => image.resize(target.width, target.height, FilterType::Triangle),
        ThumbnailMethod::Crop if width >= target.width && height >= target.height => {
            image.resize_to_fill(target.width, target.height, FilterType::Triangle)
        }
        // Too small in one dimension to crop at this size without enlarging it: cut the
        // largest centred piece of the requested aspect ratio instead.
        ThumbnailMethod::Crop => {
            let (crop_width, crop_height) = largest_crop(width, height, target.width, target.height);
            image.crop_imm((width - crop_width) / 2, (height - crop_height) / 2, crop_width, crop_height)
        }
    }
}

/// The frames of an animated image, decoded lazily under the allocation limit.
fn frames_of(bytes: &[u8], format: ImageFormat, limits: DecodeLimits) -> Result<Frames<'_>> {
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_alloc);
    match format {
        ImageFormat::Gif => {
            let mut decoder = image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).map_err(decode_error)?;
            decoder.set_limits(decoder_limits).map_err(decode_error)?;
            Ok(decoder.into_frames())
        }
        ImageFormat::WebP => {
            let mut decoder = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).map_err(decode_error)?;
            decoder.set_limits(decoder_limits).map_err(decode_error)?;
            Ok(decoder.into_frames())
        }
        ImageFormat::Png => {
            let mut decoder = image::codecs::png::PngDecoder::new(Cursor::new(bytes)).map_err(decode_error)?;
            decoder.set_limits(decoder_limits).map_err(decode_error)?;
            Ok(decoder.apng().map_err(decode_error)?.into_frames())
        }
        _ => Err(cannot_thumbnail()),
    }
}

/// An animated GIF thumbnail of an animated original, or `None` when fewer than two frames
/// fit the limits (a still thumbnail is made instead).
fn animated_thumbnail(
    bytes: &[u8],
    format: ImageFormat,
    target: ThumbnailSize,
    limits: DecodeLimits,
) -> Result<Option<Thumbnail>> {
    let mut budget = ANIMATED_PIXEL_BUDGET;
    let mut frames = Vec::new();
    for frame in frames_of(bytes, format, limits)?.take(limits.max_frames.max(1)) {
        let frame = frame.map_err(decode_error)?;
        let delay = frame.delay();
        let buffer = frame.into_buffer();
        let pixels = u64::from(buffer.width()) * u64::from(buffer.height());
        if pixels > budget {
            break;
        }
        budget -= pixels;
        let resized = fit(DynamicImage::ImageRgba8(buffer), target).to_rgba8();
        frames.push(Frame::from_parts(resized, 0, 0, delay));
    }
    if frames.len() < 2 {
        return Ok(None);
    }
    let (width, height) = (frames[0].buffer().width(), frames[0].buffer().height());
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 20);
        encoder.set_repeat(Repeat::Infinite).map_err(|e| Error::internal(format!("encode GIF thumbnail: {e}")))?;
        encoder.encode_frames(frames).map_err(|e| Error::internal(format!("encode GIF thumbnail: {e}")))?;
    }
    Ok(Some(Thumbnail::Generated { bytes: out, content_type: "image/gif", width, height }))
}

/// The largest `w`×`h` within `width`×`height` with the aspect ratio of
/// `target_width`×`target_height` (at least 1×1).
fn largest_crop(width: u32, height: u32, target_width: u32, target_height: u32) -> (u32, u32) {
    let (width64, height64) = (u64::from(width), u64::from(height));
    let (tw, th) = (u64::from(target_width.max(1)), u64::from(target_height.max(1)));
    // Full width if the image is relatively taller than the target, full height otherwise.
    let (w, h) =
        if width64 * th <= height64 * tw { (width64, width64 * th / tw) } else { (height64 * tw / th, height64) };
    (u32::try_from(w).unwrap_or(width).clamp(1, width), u32::try_from(h).unwrap_or(height).clamp(1, height))
}

/// Whether an image of `format` has more than one frame. Only called for images no larger
/// than a thumbnail, so decoding two frames of a GIF is cheap.
fn is_animated(bytes: &[u8], format: ImageFormat, limits: DecodeLimits) -> bool {
    match format {
        ImageFormat::Png => {
            image::codecs::png::PngDecoder::new(Cursor::new(bytes)).and_then(|d| d.is_apng()).unwrap_or(false)
        }
        ImageFormat::WebP => {
            image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).map(|d| d.has_animation()).unwrap_or(false)
        }
        ImageFormat::Gif => match image::codecs::gif::GifDecoder::new(Cursor::new(bytes)) {
            Ok(mut decoder) => {
                let mut gif_limits = image::Limits::default();
                gif_limits.max_alloc = Some(limits.max_alloc);
                decoder.set_limits(gif_limits).is_ok() && decoder.into_frames().take(2).count() > 1
            }
            // Undecodable: treat it as animated, so that it is not served as it is.
            Err(_) => true,
        },
        _ => false,
    }
}

/// Encode a thumbnail: JPEG for JPEG sources (photos, no transparency), PNG otherwise.
fn encode(image: DynamicImage, source: ImageFormat) -> Result<Thumbnail> {
    let (width, height) = (image.width(), image.height());
    let mut out = Cursor::new(Vec::new());
    let content_type = if source == ImageFormat::Jpeg {
        let rgb = image.to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&rgb)
            .map_err(|e| Error::internal(format!("encode JPEG thumbnail: {e}")))?;
        "image/jpeg"
    } else {
        DynamicImage::ImageRgba8(image.to_rgba8())
            .write_to(&mut out, ImageFormat::Png)
            .map_err(|e| Error::internal(format!("encode PNG thumbnail: {e}")))?;
        "image/png"
    };
    Ok(Thumbnail::Generated { bytes: out.into_inner(), content_type, width, height })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ThumbnailMethod::{Crop, Scale};

    #[test]
    fn sizes_are_chosen_to_cover_the_request() {
        let cases = [
            ((16, 16, Crop), (32, 32, Crop)),
            ((32, 32, Crop), (32, 32, Crop)),
            ((33, 20, Crop), (96, 96, Crop)),
            ((96, 96, Crop), (96, 96, Crop)),
            // A crop larger than the crop sizes is answered by a scale that covers it.
            ((200, 200, Crop), (320, 240, Scale)),
            ((100, 100, Scale), (320, 240, Scale)),
            ((320, 240, Scale), (320, 240, Scale)),
            ((300, 300, Scale), (640, 480, Scale)),
            ((641, 100, Scale), (800, 600, Scale)),
            ((5000, 5000, Scale), (800, 600, Scale)),
            ((5000, 5000, Crop), (800, 600, Scale)),
            ((0, 0, Scale), (320, 240, Scale)),
        ];
        for ((w, h, method), (ew, eh, emethod)) in cases {
            assert_eq!(choose_size(w, h, method), size(ew, eh, emethod), "{w}x{h} {method:?}");
        }
    }

    #[test]
    fn largest_crops_keep_the_aspect_ratio() {
        assert_eq!(largest_crop(50, 200, 96, 96), (50, 50));
        assert_eq!(largest_crop(200, 50, 96, 96), (50, 50));
        assert_eq!(largest_crop(400, 100, 320, 240), (133, 100));
        assert_eq!(largest_crop(1, 1000, 96, 96), (1, 1));
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image =
            image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 0, 255]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(image).write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn generated_size(thumbnail: &Thumbnail) -> (u32, u32) {
        match thumbnail {
            Thumbnail::Generated { bytes, width, height, .. } => {
                let decoded = image::load_from_memory(bytes).unwrap();
                assert_eq!((decoded.width(), decoded.height()), (*width, *height));
                (*width, *height)
            }
            Thumbnail::Original { .. } => panic!("expected a generated thumbnail"),
        }
    }

    const LIMITS: DecodeLimits = DecodeLimits { max_pixels: 32_000_000, max_alloc: 512 * 1024 * 1024, max_frames: 10 };

    #[test]
    fn scale_and_crop() {
        let source = png(400, 200);
        let scaled = make_thumbnail(&source, size(320, 240, Scale), false, LIMITS).unwrap();
        assert_eq!(generated_size(&scaled), (320, 160));
        let cropped = make_thumbnail(&source, size(96, 96, Crop), false, LIMITS).unwrap();
        assert_eq!(generated_size(&cropped), (96, 96));
        let tall = png(50, 200);
        let cropped = make_thumbnail(&tall, size(96, 96, Crop), false, LIMITS).unwrap();
        assert_eq!(generated_size(&cropped), (50, 50));
    }

    #[test]
    fn small_images_are_not_enlarged() {
        let source = png(20, 10);
        let thumbnail = make_thumbnail(&source, size(32, 32, Crop), false, LIMITS).unwrap();
        assert!(matches!(thumbnail, Thumbnail::Original { content_type: "image/png" }), "{thumbnail:?}");
    }

    #[test]
    fn non_images_are_refused() {
        for bytes in [&b"just some text"[..], b"", b"\x89PNG\r\n\x1a\n garbage"] {
            let error = make_thumbnail(bytes, size(32, 32, Crop), false, LIMITS).unwrap_err();
            assert_eq!(error.kind().map(|k| k.errcode().to_string()).as_deref(), Some("M_UNKNOWN"), "{bytes:?}");
        }
    }

    /// A valid PNG header announcing `width`×`height`, with one tiny compressed row.
    pub(crate) fn png_bomb(width: u32, height: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let mut crc_input = kind.to_vec();
            crc_input.extend_from_slice(data);
            out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        // A stored (uncompressed) zlib stream of a few zero bytes.
        chunk(&mut out, b"IDAT", &[0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0x00, 0x04, 0x00, 0x01]);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn decompression_bombs_are_refused_before_decoding() {
        let bomb = png_bomb(100_000, 100_000);
        assert!(bomb.len() < 100);
        let error = make_thumbnail(&bomb, size(96, 96, Crop), false, LIMITS).unwrap_err();
        assert_eq!(error.kind().map(|k| k.errcode().to_string()).as_deref(), Some("M_TOO_LARGE"));
        // Under the pixel limit but over the allocation limit: the decoder's limits refuse it.
        let tight = DecodeLimits { max_pixels: 32_000_000, max_alloc: 1024 * 1024, max_frames: 10 };
        let error = make_thumbnail(&png_bomb(4000, 4000), size(96, 96, Crop), false, tight).unwrap_err();
        assert_eq!(error.kind().map(|k| k.errcode().to_string()).as_deref(), Some("M_TOO_LARGE"));
    }

    #[test]
    fn animated_gifs_are_served_still_unless_asked() {
        use image::{Delay, Frame, codecs::gif::GifEncoder};
        let mut bytes = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut bytes);
            let frames = (0..2u8).map(|i| {
                Frame::from_parts(
                    image::RgbaImage::from_pixel(10, 10, image::Rgba([i * 100, 0, 0, 255])),
                    0,
                    0,
                    Delay::from_numer_denom_ms(100, 1),
                )
            });
            encoder.encode_frames(frames).unwrap();
        }
        let still = make_thumbnail(&bytes, size(32, 32, Crop), false, LIMITS).unwrap();
        assert!(matches!(&still, Thumbnail::Generated { content_type: "image/png", .. }), "{still:?}");
        assert_eq!(generated_size(&still), (10, 10));
        let animated = make_thumbnail(&bytes, size(32, 32, Crop), true, LIMITS).unwrap();
        assert!(matches!(animated, Thumbnail::Original { content_type: "image/gif" }), "{animated:?}");
    }

    /// An animated GIF of `frames` frames, `width`×`height`.
    fn animated_gif(width: u32, height: u32, frames: u8) -> Vec<u8> {
        use image::{Delay, Frame, codecs::gif::GifEncoder};
        let mut bytes = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut bytes);
            let frames = (0..frames).map(|i| {
                Frame::from_parts(
                    image::RgbaImage::from_fn(width, height, |x, _| image::Rgba([i.wrapping_mul(40), x as u8, 0, 255])),
                    0,
                    0,
                    Delay::from_numer_denom_ms(50, 1),
                )
            });
            encoder.encode_frames(frames).unwrap();
        }
        bytes
    }

    fn gif_frames(bytes: &[u8]) -> Vec<(u32, u32)> {
        let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).unwrap();
        decoder.into_frames().map(|frame| frame.unwrap().into_buffer().dimensions()).collect()
    }

    #[test]
    fn large_animations_give_animated_gifs_when_asked() {
        let source = animated_gif(200, 100, 4);
        let animated = make_thumbnail(&source, size(96, 96, Crop), true, LIMITS).unwrap();
        let Thumbnail::Generated { bytes, content_type: "image/gif", width: 96, height: 96 } = &animated else {
            panic!("expected an animated GIF, got {animated:?}");
        };
        assert_eq!(gif_frames(bytes), vec![(96, 96); 4], "every frame, cropped");
        let scaled = make_thumbnail(&source, size(32, 32, Crop), true, LIMITS).unwrap();
        assert!(matches!(scaled, Thumbnail::Generated { content_type: "image/gif", .. }));

        // At most max_frames frames are kept.
        let long = animated_gif(64, 64, 15);
        let Thumbnail::Generated { bytes, .. } = make_thumbnail(&long, size(32, 32, Crop), true, LIMITS).unwrap()
        else {
            panic!("expected a generated thumbnail");
        };
        assert_eq!(gif_frames(&bytes).len(), LIMITS.max_frames);

        // Without the wish, a still PNG of the first frame.
        let still = make_thumbnail(&source, size(96, 96, Crop), false, LIMITS).unwrap();
        assert!(matches!(still, Thumbnail::Generated { content_type: "image/png", .. }), "{still:?}");
        // A single-frame limit cannot animate: still.
        let one = DecodeLimits { max_frames: 1, ..LIMITS };
        let still = make_thumbnail(&source, size(96, 96, Crop), true, one).unwrap();
        assert!(matches!(still, Thumbnail::Generated { content_type: "image/png", .. }), "{still:?}");
    }

    #[test]
    fn webp_sources_are_thumbnailed() {
        let image = image::RgbaImage::from_fn(300, 200, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 7, 255]));
        let mut webp = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(image).write_to(&mut webp, ImageFormat::WebP).unwrap();
        let thumbnail = make_thumbnail(webp.get_ref(), size(96, 96, Crop), false, LIMITS).unwrap();
        assert!(matches!(&thumbnail, Thumbnail::Generated { content_type: "image/png", .. }));
        assert_eq!(generated_size(&thumbnail), (96, 96));
    }

    #[test]
    fn jpeg_sources_give_jpeg_thumbnails() {
        let image = image::RgbImage::from_fn(500, 400, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut jpeg = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(image).write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
        let thumbnail = make_thumbnail(jpeg.get_ref(), size(320, 240, Scale), false, LIMITS).unwrap();
        assert!(matches!(&thumbnail, Thumbnail::Generated { content_type: "image/jpeg", .. }));
        assert_eq!(generated_size(&thumbnail), (300, 240));
    }
}
