/**
 * A worker's console in a main-area tab: xterm.js on the worker's channel
 * WebSocket, with history replay, resize, reconnect and an exited state.
 */

import { MainAreaWidget } from '@jupyterlab/apputils';
import { terminalIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';

import { describeError, MasClient } from './api';
import { ChannelClient, ChannelState } from './channel';
import { exitText, ISession, IWorker } from './model';

export interface IConsoleOptions {
  client: MasClient;
  sessionId: string;
  workerId: string;
  /** The session's and worker's names for the tab title, when known. */
  sessionName?: string;
  workerName?: string;
  /** Called to learn the current worker record (for its exit code and status). */
  lookup?: () => IWorker | undefined;
  /** Called to learn the current session record (paused or not). */
  lookupSession?: () => ISession | undefined;
  /** Whether the server's list is loaded and this worker is not in it. */
  isGone?: () => boolean;
}

/**
 * What the console says when its worker's process was ended for it, by the worker's
 * exit_reason (a restart or a pause ends the process with SIGHUP: exit code -1, no crash).
 */
const ENDED_TEXT: Record<string, string> = {
  restarted: 'The worker is restarting: the console reconnects when it runs.',
  paused: 'The session is paused: its processes are stopped.',
  stopped: 'The worker was stopped with its session.',
  'server stopped': 'The worker ended when the server stopped.'
};

/** Below this the tab is not laid out yet (or too small to use): its size is not sent. */
const MIN_COLS = 10;
const MIN_ROWS = 3;
/** How many times (50 ms apart) a console that is not laid out yet looks again. */
const FIT_RETRIES = 40;

const SERVER_PAUSED_TEXT = 'The worker ended with the server: its session is paused until you resume it.';

const STATE_TEXT: Record<ChannelState, string> = {
  connecting: 'Connecting…',
  open: '',
  reconnecting: 'Connection lost: reconnecting…',
  exited: '',
  stopped: ''
};

/** The value of a CSS custom property on the page (Lab's theme variables). */
function cssVar(name: string): string {
  return getComputedStyle(document.body).getPropertyValue(name).trim();
}

/** The xterm.js view inside the tab. */
export class ConsoleView extends Widget {
  constructor(options: IConsoleOptions) {
    super();
    this.addClass('mas-Console');
    this._options = options;
    this._host = document.createElement('div');
    this._host.className = 'mas-Console-terminal';
    this._banner = document.createElement('div');
    this._banner.className = 'mas-Console-banner';
    this._banner.hidden = true;
    this.node.append(this._banner, this._host);

    this._term = new Terminal({
      cursorBlink: true,
      scrollback: 5000,
      fontFamily: cssVar('--jp-code-font-family') || 'monospace',
      fontSize: 13,
      lineHeight: 1.1,
      allowProposedApi: false,
      convertEol: false
    });
    this._fit = new FitAddon();
    this._term.loadAddon(this._fit);
    this._term.onData(data => {
      this._channel.sendInput(data);
    });
    this._channel = new ChannelClient({
      open: () =>
        options.client.openSocket(
          `sessions/${encodeURIComponent(options.sessionId)}/workers/${encodeURIComponent(options.workerId)}/channel`
        ),
      sink: {
        reset: () => this._term.reset(),
        write: data => this._term.write(data)
      },
      onState: state => this._onState(state),
      onActivity: state => this._onActivity(state),
      onExit: code => this._onExit(code)
    });
  }

  /** Take the colours of the current JupyterLab theme (light or dark). */
  applyTheme(): void {
    const background = cssVar('--jp-layout-color0') || '#ffffff';
    const foreground = cssVar('--jp-ui-font-color0') || '#000000';
    this._term.options.theme = {
      background,
      foreground,
      cursor: foreground,
      cursorAccent: background,
      selectionBackground: cssVar('--jp-brand-color3') || 'rgba(128, 128, 255, 0.3)'
    };
    this._host.style.background = background;
  }

  get sessionId(): string {
    return this._options.sessionId;
  }

  get workerId(): string {
    return this._options.workerId;
  }

  get channelState(): ChannelState {
    return this._channel.state;
  }

  /** The activity the channel last reported. */
  get activity(): string {
    return this._activity;
  }

  /** Connect again now (the tab came back, the server is back). */
  reconnectNow(): void {
    if (this._channel.state === 'reconnecting') {
      this._channel.reconnectNow();
    }
  }

  /** Restart the worker (agents continue their conversation) and reconnect. */
  async restart(): Promise<void> {
    this._showBanner('Restarting…', 'none');
    try {
      await this._options.client.restartWorker(this._options.sessionId, this._options.workerId);
    } catch (err) {
      this._showBanner(`Could not restart: ${describeError(err)}`, 'restart');
      return;
    }
    // The worker's events may have reconnected already (syncWithModel).
    if (this._channel.state === 'exited') {
      this._term.reset();
      this._channel.connect();
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._channel.dispose();
    this._term.dispose();
    super.dispose();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (!this._opened) {
      this._opened = true;
      this.applyTheme();
      this._term.open(this._host);
      this._fitNow();
      if (!this._gone) {
        this._channel.connect();
      }
    }
  }

  protected onResize(msg: Widget.ResizeMessage): void {
    super.onResize(msg);
    this._scheduleFit();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._scheduleFit();
  }

  protected onActivateRequest(msg: Message): void {
    super.onActivateRequest(msg);
    this._term.focus();
  }

  private _scheduleFit(retry = false): void {
    if (!retry) {
      this._fitRetries = 0; // a new layout: it gets its own looks
    }
    if (this._fitTimer !== null) {
      clearTimeout(this._fitTimer);
    }
    this._fitTimer = window.setTimeout(() => {
      this._fitTimer = null;
      this._fitNow();
    }, 50);
  }

  private _fitNow(): void {
    if (!this._opened || !this.isVisible) {
      return;
    }
    try {
      // A tab being split in is a sliver before it is laid out (2 columns), and a terminal
      // whose font is not measured yet has no size: the worker must never get such a size,
      // it would draw its screen (and its history) at that width.
      const dims = this._fit.proposeDimensions();
      if (!dims || !(dims.cols >= MIN_COLS && dims.rows >= MIN_ROWS)) {
        throw new Error('not laid out');
      }
      this._fit.fit();
    } catch {
      // Look again shortly (a bounded number of times): the layout that follows does not
      // always bring a resize, and a console left at xterm's 24 rows would stay wrong.
      if (this._fitRetries < FIT_RETRIES) {
        this._fitRetries += 1;
        this._scheduleFit(true);
      }
      return;
    }
    this._fitRetries = 0;
    this._channel.resize(this._term.rows, this._term.cols);
  }

  private _onState(state: ChannelState): void {
    this.node.dataset.channel = state;
    if (state === 'open') {
      this._hideBanner();
    } else if (STATE_TEXT[state]) {
      this._showBanner(STATE_TEXT[state], false);
    }
    this._stateChanged();
  }

  private _onActivity(state: string): void {
    this._activity = state;
    this.node.dataset.activity = state;
    this._stateChanged();
  }

  private _onExit(code: number | null): void {
    this._exitCode = code;
    this._activity = 'exited';
    this.node.dataset.activity = 'exited';
    this._showExited();
    this._stateChanged();
    // Restarted from elsewhere, the worker may run again before the panel's events say so
    // (they come on another socket): ask the server once, then follow the events.
    void this._connectIfRunning();
  }

  /** Connect again if the server says the worker runs (and the session is active). */
  private async _connectIfRunning(): Promise<void> {
    let session: ISession;
    try {
      session = await this._options.client.getSession(this._options.sessionId);
    } catch {
      return; // gone or unreachable: the events tell the rest
    }
    const worker = session.workers.find(w => w.id === this._options.workerId);
    if (this.isDisposed || this._channel.state !== 'exited' || session.status !== 'active') {
      return;
    }
    if (worker && worker.status === 'running') {
      this._connectAgain();
    }
  }

  private _connectAgain(): void {
    this._hideBanner();
    this._activity = 'unknown';
    this._channel.connect();
    this._stateChanged();
  }

  /** The banner of a console whose process is gone: paused session, or how it ended. */
  private _showExited(): void {
    const session = this._options.lookupSession?.();
    const worker = this._options.lookup?.();
    // The panel's record once its events have caught up, else what the console was told.
    const reason = worker?.status === 'exited' ? worker.exit_reason : this._channel.exitReason;
    if ((session && session.status === 'paused') || reason === 'paused') {
      // A server's stop (or death) pauses a session it left with nothing running.
      const byServer = reason === 'server stopped' || reason === 'interrupted';
      this._showBanner(byServer ? SERVER_PAUSED_TEXT : ENDED_TEXT.paused, 'resume');
      return;
    }
    const stopped = session?.status === 'stopped';
    if (reason && ENDED_TEXT[reason]) {
      this._showBanner(ENDED_TEXT[reason], stopped ? 'none' : 'restart');
      return;
    }
    const code = this._exitCode;
    // The code or signal here: the reason follows in words.
    const text =
      worker && worker.status === 'exited'
        ? exitText({ ...worker, exit_reason: null })
        : code === null
          ? 'exited'
          : `exited (${code})`;
    this._showBanner(`The worker ${text}${reason ? `: ${reason}` : ''}.`, stopped ? 'none' : 'restart');
  }

  /**
   * Follow the model: when the worker runs again (the session was resumed, someone
   * restarted it elsewhere), reconnect; when it is known to be gone, say so.
   */
  syncWithModel(): void {
    if (this._options.isGone?.()) {
      // Deleted (here or elsewhere): nothing to reconnect to.
      this._gone = true;
      this._channel.dispose();
      this._activity = 'exited';
      this._showBanner('This worker no longer exists: its session was deleted or it was removed.', 'none');
      this._stateChanged();
      return;
    }
    const worker = this._options.lookup?.();
    const session = this._options.lookupSession?.();
    const state = this._channel.state;
    if (state === 'exited' && worker && worker.status !== 'exited' && session?.status === 'active') {
      this._connectAgain();
    } else if (state === 'exited') {
      this._showExited();
    }
  }

  private _showBanner(text: string, action: 'restart' | 'resume' | 'none' | false): void {
    this._banner.replaceChildren();
    const span = document.createElement('span');
    span.textContent = text;
    this._banner.append(span);
    const button = (label: string, title: string, onClick: () => void) => {
      const b = document.createElement('button');
      b.className = 'jp-mod-styled jp-mod-accept mas-Console-action';
      b.type = 'button';
      b.textContent = label;
      b.title = title;
      b.dataset.action = label.toLowerCase();
      b.addEventListener('click', onClick);
      this._banner.append(b);
    };
    if (action === 'restart') {
      button('Restart', 'Start the worker again (agents continue their conversation)', () => void this.restart());
    } else if (action === 'resume') {
      button('Resume', 'Resume the session: its workers start again', () => void this._resume());
    } else if (action === false && this._channel?.state === 'reconnecting') {
      const b = document.createElement('button');
      b.className = 'mas-LinkButton';
      b.type = 'button';
      b.textContent = 'Retry now';
      b.addEventListener('click', () => this._channel.reconnectNow());
      this._banner.append(b);
    }
    this._banner.hidden = false;
    this._banner.dataset.kind = action === false ? 'connection' : 'exited';
    // The banner takes rows from the terminal: fit again so its last lines stay in view.
    this._scheduleFit();
  }

  private async _resume(): Promise<void> {
    this._showBanner('Resuming…', 'none');
    try {
      await this._options.client.resumeSession(this._options.sessionId);
    } catch (err) {
      this._showBanner(`Could not resume: ${describeError(err)}`, 'resume');
    }
    // The session-updated event brings the running worker: syncWithModel reconnects.
  }

  private _hideBanner(): void {
    if (this._banner.hidden) {
      return;
    }
    this._banner.hidden = true;
    this._banner.replaceChildren();
    this._scheduleFit();
  }

  private _stateChanged(): void {
    this.updateTitle();
  }

  /** Set the names shown in the tab when they become known or change. */
  setNames(sessionName?: string, workerName?: string): void {
    if (sessionName) {
      this._options.sessionName = sessionName;
    }
    if (workerName) {
      this._options.workerName = workerName;
    }
    this.updateTitle();
  }

  /** Reflect names, activity and connection in the tab's title (MainAreaWidget mirrors it). */
  updateTitle(): void {
    const state = this._channel.state;
    const activity = state === 'exited' ? 'exited' : this._activity;
    const title = this.title;
    title.label = `${this._options.sessionName ?? 'session'} / ${this._options.workerName ?? 'worker'}`;
    title.icon = terminalIcon;
    title.closable = true;
    title.className = `mas-ConsoleTab mas-mod-${activity}`;
    const extra = state === 'reconnecting' ? 'reconnecting' : activity;
    title.caption = `${title.label}${extra && extra !== 'unknown' ? ` (${extra})` : ''}`;
  }

  private _options: IConsoleOptions;
  private _host: HTMLElement;
  private _banner: HTMLElement;
  private _term: Terminal;
  private _fit: FitAddon;
  private _channel: ChannelClient;
  private _opened = false;
  private _gone = false;
  private _fitTimer: number | null = null;
  private _fitRetries = 0;
  private _activity = 'unknown';
  private _exitCode: number | null = null;
}

/** The tab around a console. */
export class ConsoleWidget extends MainAreaWidget<ConsoleView> {
  constructor(options: IConsoleOptions) {
    const content = new ConsoleView(options);
    super({ content });
    this.addClass('mas-ConsoleWidget');
    this.id = ConsoleWidget.idFor(options.sessionId, options.workerId);
    content.updateTitle();
  }

  /** A stable DOM id for the console of one worker. */
  static idFor(sessionId: string, workerId: string): string {
    return `mas-console-${sessionId}-${workerId}`.replace(/[^A-Za-z0-9_-]/g, '_');
  }
}
