#!/usr/bin/env bash
# Run HERE (Debian 12, root, the package registries), from the repository root: builds the ffmpeg + ffprobe that
# the GPU machine lacks into .ffmpeg/bin/ (git ignores it locally), for bench/device/check.sh (carry ".ffmpeg").
#
# Debian's own ffmpeg has NVENC/NVDEC, but with its ~200 shared libraries it is 240 MB: far over the device tool's
# 64 MiB. This is Debian's ffmpeg source (5.1, `apt-get source`), configured small: the decoders, formats, filters
# and encoders heygemd, its gpu tests and the bench use; NVENC, NVDEC (-hwaccel cuda) and
# CUVID through the nv-codec-headers, which load the driver's libraries at run time; libx264 and zimg linked in
# statically. It needs only glibc, zlib and libstdc++ there (glibc 2.36 here; that image's is newer).
# About 10 minutes on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
grep -qx '/.ffmpeg/' "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null \
  || echo '/.ffmpeg/' >> "$(git rev-parse --git-common-dir)/info/exclude"
build=${FFMPEG_BUILD_DIR:-/tmp/heygemd-ffmpeg-build}
mkdir -p "$build/srcparts" "$build/lists/partial" "$build/pc"
cat > "$build/srcparts/debian-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt=(-oDir::Etc::SourceList=/dev/null "-oDir::Etc::SourceParts=$build/srcparts" "-oDir::State::Lists=$build/lists")
apt-get install -y -q nasm pkg-config libx264-dev libzimg-dev libffmpeg-nvenc-dev zlib1g-dev >/dev/null
apt-get "${apt[@]}" update -q >/dev/null
(cd "$build" && apt-get "${apt[@]}" source --download-only -q ffmpeg >/dev/null)
src=$(find "$build" -maxdepth 1 -name 'ffmpeg_*.orig.tar.xz' | head -1)
rm -rf "$build/src" && mkdir "$build/src" && tar -xf "$src" -C "$build/src" --strip-components=1

# Static libx264 and zimg: pkg-config files that name only their .a archives.
lib=/usr/lib/x86_64-linux-gnu
printf 'Name: x264\nDescription: x264\nVersion: 0.164\nLibs: -L%s -l:libx264.a -lpthread -lm -ldl\nCflags: -I/usr/include\n' \
  "$lib" > "$build/pc/x264.pc"
printf 'Name: zimg\nDescription: zimg\nVersion: 3.0.4\nLibs: -L%s -l:libzimg.a -lstdc++ -lm\nCflags: -I/usr/include\n' \
  "$lib" > "$build/pc/zimg.pc"

# Every container; the codecs and filters heygemd, its gpu tests and the bench use (all of them: ~2500 files,
# over an hour on 2 cores). Three CPU tests make their media with encoders it lacks (libmp3lame, ac3).
decoders=h264,hevc,mpeg4,mpeg1video,mpeg2video,vp8,vp9,prores,dnxhd,mjpeg,png,bmp,tiff,webp,gif,rawvideo,ffv1,\
utvideo,aac,mp3,mp3float,mp2,ac3,eac3,alac,flac,opus,vorbis,pcm_s16le,pcm_s16be,pcm_s24le,pcm_s32le,pcm_f32le,\
pcm_f64le,pcm_u8,pcm_alaw,pcm_mulaw,h264_cuvid,hevc_cuvid
encoders=libx264,h264_nvenc,hevc_nvenc,aac,flac,pcm_s16le,pcm_f32le,rawvideo,ffv1,utvideo,mjpeg,png,wrapped_avframe
filters=scale,format,fps,crop,pad,setsar,setdar,setparams,transpose,hflip,vflip,zscale,tonemap,colorspace,null,\
anull,aresample,aformat,atrim,apad,trim,select,aselect,setpts,asetpts,split,asplit,concat,overlay,loop,aloop,\
reverse,areverse,noise,gblur,boxblur,drawbox,rotate,geq,lut,lutrgb,lutyuv,showinfo,ashowinfo,volume,pan,amix,\
amerge,atempo,color,testsrc,testsrc2,nullsrc,sine,anullsrc,anoisesrc,aevalsrc,hwupload,hwdownload,hwupload_cuda
cd "$build/src"
PKG_CONFIG_PATH="$build/pc:/usr/share/pkgconfig" ./configure \
  --prefix="$build/install" --enable-gpl --enable-version3 \
  --disable-autodetect --disable-doc --disable-ffplay --disable-debug --disable-network --disable-everything \
  --enable-pthreads --enable-zlib --enable-libx264 --enable-libzimg \
  --enable-ffnvcodec --enable-nvenc --enable-nvdec --enable-cuvid \
  --enable-hwaccel=h264_nvdec,hevc_nvdec \
  --enable-decoder="$decoders" --enable-encoder="$encoders" --enable-filter="$filters" \
  --enable-demuxers --enable-muxers --enable-parsers --enable-bsfs \
  --enable-protocol=file,pipe,subfile,concat --enable-indev=lavfi \
  --extra-ldflags=-static-libgcc >"$build/configure.log"
make -j"$(nproc)" >"$build/make.log" 2>&1
make install >/dev/null
rm -rf "$root/.ffmpeg" && mkdir -p "$root/.ffmpeg/bin"
install -s "$build/install/bin/ffmpeg" "$build/install/bin/ffprobe" "$root/.ffmpeg/bin/"
"$root/.ffmpeg/bin/ffmpeg" -hide_banner -encoders | grep -E 'nvenc|libx264'
"$root/.ffmpeg/bin/ffmpeg" -hide_banner -hwaccels
ldd "$root/.ffmpeg/bin/ffmpeg"
du -sh "$root/.ffmpeg"
