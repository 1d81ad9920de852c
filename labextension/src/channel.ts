/**
 * The client side of a worker's channel WebSocket (terminado's message protocol
 * plus `activity` and `exit`), independent of xterm.js so it is unit-tested.
 */

import { ISocketLike, ReconnectingSocket, SocketState } from './socket';

/** A message from the server, decoded. */
export type ChannelMessage =
  | { kind: 'setup' }
  | { kind: 'stdout'; data: string }
  | { kind: 'activity'; state: string }
  | { kind: 'exit'; code: number | null; reason: string | null }
  | { kind: 'disconnect'; code: number | null }
  | { kind: 'unknown' };

/** Decode one server message; anything malformed is `unknown`, never an exception. */
export function parseChannelMessage(raw: string): ChannelMessage {
  let msg: unknown;
  try {
    msg = JSON.parse(raw);
  } catch {
    return { kind: 'unknown' };
  }
  if (!Array.isArray(msg) || typeof msg[0] !== 'string') {
    return { kind: 'unknown' };
  }
  const num = (v: unknown): number | null => (typeof v === 'number' ? v : null);
  switch (msg[0]) {
    case 'setup':
      return { kind: 'setup' };
    case 'stdout':
      return { kind: 'stdout', data: typeof msg[1] === 'string' ? msg[1] : '' };
    case 'activity':
      return { kind: 'activity', state: String(msg[1] ?? 'unknown') };
    case 'exit':
      // The third element says why (the worker's exit_reason: "restarted", "paused", ...).
      return { kind: 'exit', code: num(msg[1]), reason: typeof msg[2] === 'string' ? msg[2] : null };
    case 'disconnect':
      return { kind: 'disconnect', code: num(msg[1]) };
    default:
      return { kind: 'unknown' };
  }
}

export function stdinMessage(data: string): string {
  return JSON.stringify(['stdin', data]);
}

export function sizeMessage(rows: number, cols: number): string {
  return JSON.stringify(['set_size', rows, cols]);
}

/** Where the channel writes what the worker printed (an xterm.js Terminal in the app). */
export interface ITerminalSink {
  reset(): void;
  write(data: string): void;
}

export type ChannelState = 'connecting' | 'open' | 'reconnecting' | 'exited' | 'stopped';

export interface IChannelOptions {
  open: () => ISocketLike;
  sink: ITerminalSink;
  onState?: (state: ChannelState) => void;
  onActivity?: (state: string) => void;
  /** The worker ended (`reason`: its exit_reason) or was deleted (`reason` null). */
  onExit?: (code: number | null, reason: string | null) => void;
  minDelay?: number;
  maxDelay?: number;
  setTimeout?: (fn: () => void, ms: number) => any;
  clearTimeout?: (handle: any) => void;
}

/** One console's connection: replays history on (re)connect, stops at exit. */
export class ChannelClient {
  constructor(options: IChannelOptions) {
    this._options = options;
    this._socket = new ReconnectingSocket({
      open: options.open,
      minDelay: options.minDelay,
      maxDelay: options.maxDelay,
      setTimeout: options.setTimeout,
      clearTimeout: options.clearTimeout,
      onOpen: () => {
        if (this._size) {
          this._socket.send(sizeMessage(this._size[0], this._size[1]));
        }
      },
      onMessage: data => this._onMessage(data),
      onStateChange: state => this._onSocketState(state)
    });
  }

  get state(): ChannelState {
    return this._state;
  }

  get exitCode(): number | null {
    return this._exitCode;
  }

  /** Why the worker ended, as the server said ("restarted", "crashed", ...), or null. */
  get exitReason(): string | null {
    return this._exitReason;
  }

  /** Connect (again, e.g. after a restart of the worker). */
  connect(): void {
    this._exitCode = null;
    this._exitReason = null;
    this._everOpen = false;
    this._setState('connecting');
    this._socket.start();
  }

  /** Close for good. */
  dispose(): void {
    this._socket.stop();
    this._setState('stopped');
  }

  /** Try now instead of waiting for the next retry. */
  reconnectNow(): void {
    this._socket.reconnectNow();
  }

  /** Type into the worker; returns false when not connected. */
  sendInput(data: string): boolean {
    if (this._state !== 'open') {
      return false;
    }
    return this._socket.send(stdinMessage(data));
  }

  /** Tell the server the terminal's size (sent again on every reconnect). */
  resize(rows: number, cols: number): void {
    if (rows <= 0 || cols <= 0) {
      return;
    }
    if (this._size && this._size[0] === rows && this._size[1] === cols) {
      return;
    }
    this._size = [rows, cols];
    if (this._state === 'open') {
      this._socket.send(sizeMessage(rows, cols));
    }
  }

  private _onMessage(raw: string): void {
    const msg = parseChannelMessage(raw);
    switch (msg.kind) {
      case 'setup':
        // The history replay follows: start from a clean screen so a reconnect
        // rebuilds it instead of printing everything twice. The screen is cleared
        // with the first output, so a server that has no history left (it restarted)
        // leaves what the user saw in place.
        this._pendingReset = true;
        break;
      case 'stdout':
        if (this._pendingReset) {
          this._pendingReset = false;
          this._options.sink.reset();
        }
        this._options.sink.write(msg.data);
        break;
      case 'activity':
        this._options.onActivity?.(msg.state);
        break;
      case 'exit':
      case 'disconnect':
        this._exitCode = msg.code;
        this._exitReason = msg.kind === 'exit' ? msg.reason : null;
        this._socket.stop();
        this._setState('exited');
        this._options.onExit?.(msg.code, this._exitReason);
        break;
      default:
        break;
    }
  }

  private _onSocketState(state: SocketState): void {
    if (this._state === 'exited' || this._state === 'stopped') {
      return;
    }
    if (state === 'open') {
      this._setState('open');
    } else if (state === 'connecting') {
      this._setState(this._everOpen ? 'reconnecting' : 'connecting');
    } else if (state === 'closed') {
      this._setState('reconnecting');
    }
  }

  private _setState(state: ChannelState): void {
    if (state === 'open') {
      this._everOpen = true;
    }
    if (state === this._state) {
      return;
    }
    this._state = state;
    this._options.onState?.(state);
  }

  private _options: IChannelOptions;
  private _socket: ReconnectingSocket;
  private _state: ChannelState = 'connecting';
  private _size: [number, number] | null = null;
  private _exitCode: number | null = null;
  private _exitReason: string | null = null;
  private _everOpen = false;
  private _pendingReset = false;
}
