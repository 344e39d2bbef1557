// Local camera and microphone: getUserMedia with fallbacks (both → video only →
// audio only → receive only), a plain-language explanation of what went wrong,
// device lists for the pickers, device switching and mute state.

const KINDS = ['audio', 'video'];

const VIDEO_CONSTRAINTS = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24, max: 30 } };
const AUDIO_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/** Events: `trackchange` {kind, track}, `mutechange` {kind, muted}, `devicechange` {}. */
export class LocalMedia extends EventTarget {
  constructor() {
    super();
    /** Always present, holds 0–2 tracks; peer connections announce it as our stream. */
    this.stream = new MediaStream();
    this.muted = { audio: false, video: false };
    /** Why a kind is unavailable (an Error), or null. */
    this.failure = { audio: null, video: null };
    if (navigator.mediaDevices?.addEventListener) {
      navigator.mediaDevices.addEventListener('devicechange', () => this.emit('devicechange', {}));
    }
  }

  track(kind) {
    return this.stream.getTracks().find((t) => t.kind === kind) ?? null;
  }

  /** True if we have a live track of `kind` and it is not muted. */
  isSending(kind) {
    const t = this.track(kind);
    return !!t && t.readyState === 'live' && !this.muted[kind];
  }

  /**
   * Asks for camera and microphone, falling back to whichever works.
   * Never throws: on total failure we continue receive-only.
   * @returns {{audio: boolean, video: boolean, notice: string|null}}
   */
  async acquire() {
    if (!navigator.mediaDevices?.getUserMedia) {
      const err = new DOMException('navigator.mediaDevices is unavailable', 'InsecureContextError');
      this.failure = { audio: err, video: err };
      return this.result();
    }
    try {
      const s = await navigator.mediaDevices.getUserMedia({ audio: AUDIO_CONSTRAINTS, video: VIDEO_CONSTRAINTS });
      for (const t of s.getTracks()) this.adopt(t);
      return this.result();
    } catch (both) {
      // Try each kind alone: one of them may still work (e.g. no camera, or only
      // the camera was denied).
      for (const kind of KINDS) {
        try {
          const s = await navigator.mediaDevices.getUserMedia({ [kind]: kind === 'video' ? VIDEO_CONSTRAINTS : AUDIO_CONSTRAINTS });
          for (const t of s.getTracks()) this.adopt(t);
        } catch (err) {
          this.failure[kind] = err ?? both;
        }
      }
      return this.result();
    }
  }

  result() {
    const audio = !!this.track('audio');
    const video = !!this.track('video');
    return { audio, video, notice: this.notice() };
  }

  /** A sentence or two for the page when something is missing, else null. */
  notice() {
    const audio = !!this.track('audio');
    const video = !!this.track('video');
    if (audio && video) return null;
    if (!audio && !video) {
      const why = explain(this.failure.video ?? this.failure.audio);
      return `We couldn't use your camera or microphone: ${why} ` +
        "You've joined receive-only: you can still see and hear everyone, but they can't see or hear you.";
    }
    if (!video) {
      return `We couldn't use your camera: ${explain(this.failure.video)} ` +
        'You joined with your microphone only; you can still see and hear everyone.';
    }
    return `We couldn't use your microphone: ${explain(this.failure.audio)} ` +
      'You joined with your camera only (no sound from you); you can still see and hear everyone.';
  }

  adopt(track) {
    const old = this.track(track.kind);
    if (old) {
      this.stream.removeTrack(old);
      old.stop();
    }
    track.enabled = !this.muted[track.kind];
    this.stream.addTrack(track);
    this.failure[track.kind] = null;
    track.addEventListener('ended', () => {
      if (this.track(track.kind) === track) this.emit('trackchange', { kind: track.kind, track: null, ended: true });
    });
  }

  /** Input devices for the pickers; labels are empty until permission was granted. */
  async devices() {
    if (!navigator.mediaDevices?.enumerateDevices) return { audioinput: [], videoinput: [] };
    const all = await navigator.mediaDevices.enumerateDevices();
    const pick = (kind) => all.filter((d) => d.kind === kind && d.deviceId !== '')
      .map((d, i) => ({ deviceId: d.deviceId, label: d.label || `${kind === 'audioinput' ? 'Microphone' : 'Camera'} ${i + 1}` }));
    return { audioinput: pick('audioinput'), videoinput: pick('videoinput') };
  }

  /** The deviceId of the current `kind` track, if known. */
  currentDevice(kind) {
    return this.track(kind)?.getSettings?.().deviceId ?? null;
  }

  /**
   * Opens `deviceId` for `kind` and makes it the current track. Emits
   * `trackchange` so the mesh can replaceTrack on every connection.
   */
  async switchDevice(kind, deviceId) {
    const base = kind === 'video' ? VIDEO_CONSTRAINTS : AUDIO_CONSTRAINTS;
    const constraints = { [kind]: { ...base, deviceId: { exact: deviceId } } };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      // Some devices cannot be opened twice: release the current one and retry.
      const old = this.track(kind);
      if (!old || err?.name !== 'NotReadableError') throw err;
      old.stop();
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    }
    const track = stream.getTracks().find((t) => t.kind === kind);
    this.adopt(track);
    this.emit('trackchange', { kind, track });
    return track;
  }

  setMuted(kind, muted) {
    this.muted[kind] = muted;
    const t = this.track(kind);
    if (t) t.enabled = !muted;
    this.emit('mutechange', { kind, muted });
  }

  stop() {
    for (const t of this.stream.getTracks()) t.stop();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Plain-language reason for a getUserMedia failure. */
export function explain(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
    case 'PermissionDeniedError':
      return 'permission was denied. To fix it, allow camera and microphone for this site in your browser settings and reload.';
    case 'NotFoundError':
    case 'DevicesNotFoundError':
    case 'OverconstrainedError':
      return 'no such device was found.';
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return 'the device is busy (another application may be using it) or failed to start.';
    case 'InsecureContextError':
    case 'TypeError':
      return 'this browser only allows it on secure (https) pages.';
    case undefined:
      return 'it is not available.';
    default:
      return `${err.name}${err.message ? ` (${err.message})` : ''}.`;
  }
}
