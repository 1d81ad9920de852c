/**
 * The mas_jupyter JupyterLab extension: the sessions side panel, worker
 * consoles in main-area tabs, and the "MAS" commands.
 */

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  InputDialog,
  IThemeManager,
  Notification,
  showDialog,
  showErrorMessage,
  WidgetTracker
} from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { Widget } from '@lumino/widgets';

import {
  describeError,
  ISessionSpec,
  IWorkerSpec,
  MasApiError,
  MasClient,
  refusedField
} from './api';
import { ConsoleWidget } from './console';
import {
  AddWorkerForm,
  confirmForcedDelete,
  confirmForcedStop,
  ICatalog,
  NewSessionForm,
  SESSION_FIELD_LABELS
} from './dialogs';
import { masIcon, masIconWithCount } from './icons';
import { IAttention, IChange, IMasEvent, ISession, SessionsModel } from './model';
import { SessionsPanel } from './panel';
import { ReconnectingSocket } from './socket';
import { CATEGORY, CommandIDs, PLUGIN_ID } from './tokens';

interface ISettings {
  browserNotifications: boolean;
  inAppNotifications: boolean;
  showStopped: boolean;
  refreshInterval: number;
}

/** "Waiting for you" notices shown within NOTICE_MS; more are counted by one notice. */
const NOTICES_SHOWN = 3;
const NOTICE_MS = 8000;

const DEFAULT_SETTINGS: ISettings = {
  browserNotifications: true,
  inAppNotifications: true,
  showStopped: true,
  refreshInterval: 60
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Agent sessions side panel and worker consoles for mas_jupyter.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, ISettingRegistry, IThemeManager],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    themes: IThemeManager | null
  ) => {
    const controller = new Controller(app, restorer);
    // Consoles take the theme's colours; the panel follows it through --jp-* variables.
    themes?.themeChanged.connect(() => {
      // The new theme's CSS is in place a moment after the signal.
      setTimeout(() => controller.tracker.forEach(w => w.content.applyTheme()), 100);
    });
    controller.addCommands(palette);
    controller.start();
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(s => {
          const read = () => controller.configure({ ...DEFAULT_SETTINGS, ...(s.composite as any) });
          read();
          s.changed.connect(read);
        })
        .catch(err => console.warn('mas_jupyter: settings could not be loaded', err));
    }
  }
};

/** Holds the model, the connection and the widgets together. */
class Controller {
  constructor(app: JupyterFrontEnd, restorer: ILayoutRestorer | null) {
    this.app = app;
    this.client = new MasClient(app.serviceManager.serverSettings);
    this.model = new SessionsModel();
    this.panel = new SessionsPanel({ model: this.model, commands: app.commands });
    this.panel.title.icon = masIcon;
    this.panel.title.caption = 'Agent sessions';
    this.tracker = new WidgetTracker<ConsoleWidget>({ namespace: 'mas-console' });
    this.restorer = restorer;
    if (restorer) {
      restorer.add(this.panel, 'mas-sessions-panel');
      void restorer.restore(this.tracker, {
        command: CommandIDs.openConsole,
        args: w => ({ sessionId: w.content.sessionId, workerId: w.content.workerId }),
        name: w => `${w.content.sessionId}:${w.content.workerId}`
      });
    }
    // Shells without a left area (or with another name for it) still get the commands.
    try {
      app.shell.add(this.panel, 'left', { rank: 600 });
    } catch (err) {
      console.warn('mas_jupyter: this shell has no left area for the sessions panel', err);
    }
    this.socket = new ReconnectingSocket({
      open: () => this.client.openSocket('events') as any,
      onOpen: () => void this.refresh(),
      onMessage: data => this._onEvent(data),
      onStateChange: (state, failures) => this._onSocketState(state, failures),
      minDelay: 500,
      maxDelay: 10000
    });
  }

  readonly app: JupyterFrontEnd;
  readonly client: MasClient;
  readonly model: SessionsModel;
  readonly panel: SessionsPanel;
  readonly tracker: WidgetTracker<ConsoleWidget>;
  readonly restorer: ILayoutRestorer | null;
  readonly socket: ReconnectingSocket;
  settings: ISettings = { ...DEFAULT_SETTINGS };

  /** Open the events stream (the list is fetched each time it opens). */
  start(): void {
    this.socket.start();
    // Coming back to the tab after a laptop sleep: do not wait for the backoff.
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) {
        this.socket.reconnectNow();
        this.tracker.forEach(w => w.content.reconnectNow());
      }
    });
    window.addEventListener('online', () => this.socket.reconnectNow());
    this._scheduleRefresh();
  }

  configure(settings: ISettings): void {
    const intervalChanged = settings.refreshInterval !== this.settings.refreshInterval;
    this.settings = settings;
    this.panel.showStopped = settings.showStopped;
    if (intervalChanged) {
      this._scheduleRefresh();
    }
  }

  /** Fetch the whole list again (events since then keep it current). */
  async refresh(): Promise<void> {
    const seq = ++this._refreshSeq;
    this._buffer = [];
    this._refreshing = true;
    try {
      const list = await this.client.listSessions();
      if (seq !== this._refreshSeq) {
        return;
      }
      const change = this.model.reset(list);
      // Events that came while the list was on its way are newer than it or equal.
      const buffered = this._buffer;
      this._buffer = [];
      this._refreshing = false;
      const later = this.model.applyAll(buffered);
      later.changed.forEach(id => change.changed.add(id));
      change.attention.push(...later.attention);
      this._changed(change);
      // Consoles of sessions the list no longer has (deleted while this page was away, e.g.
      // a tab restored after a reload) learn it now instead of reconnecting for ever.
      this.tracker.forEach(w => {
        if (!change.changed.has(w.content.sessionId)) {
          w.content.syncWithModel();
        }
      });
      this.panel.showError(null);
      if (this.socket.state !== 'open') {
        this.socket.reconnectNow();
      }
    } catch (err) {
      if (seq === this._refreshSeq) {
        this._refreshing = false;
        this.panel.showError(`Could not load the sessions: ${describeError(err)}`);
      }
    }
  }

  private _onEvent(data: string): void {
    let event: IMasEvent;
    try {
      event = JSON.parse(data);
    } catch {
      console.warn('mas_jupyter: an event that is not JSON was ignored', data.slice(0, 200));
      return;
    }
    if (this._refreshing) {
      this._buffer.push(event);
      return;
    }
    const change = this.model.apply(event);
    this._changed(change);
    if (change.needsRefresh) {
      void this.refresh();
    }
  }

  private _changed(change: IChange): void {
    this.panel.apply(change);
    this._updateBadge();
    this._dismissAnswered();
    for (const a of change.attention) {
      this._notify(a);
    }
    // Keep the console tabs' names current (renames).
    if (change.changed.size) {
      this.tracker.forEach(w => {
        if (change.changed.has(w.content.sessionId)) {
          const s = this.model.get(w.content.sessionId);
          const worker = s?.workers.find(x => x.id === w.content.workerId);
          w.content.setNames(s?.name, worker?.name);
          w.content.syncWithModel();
        }
      });
    }
  }

  private _updateBadge(): void {
    const n = this.model.waiting().length;
    if (n === this._waitingShown) {
      return;
    }
    this._waitingShown = n;
    // Lumino renders a title's dataset on the tab: the CSS draws the count from it.
    // Keep the keys the shell put there (Lab's side bar uses `id`).
    const dataset: Record<string, string> = { ...this.panel.title.dataset };
    if (n) {
      dataset.maswaiting = String(n);
    } else {
      delete dataset.maswaiting;
    }
    this.panel.title.dataset = dataset;
    this.panel.title.icon = masIconWithCount(n);
    this.panel.title.className = n ? 'mas-mod-attention' : '';
    this.panel.title.caption = n
      ? `Agent sessions: ${n} worker${n === 1 ? '' : 's'} need${n === 1 ? 's' : ''} you`
      : 'Agent sessions';
  }

  /** Whether the user is looking at a console of the worker: one is shown and the browser
   * window has the focus. Its question is then in front of them: no notification. */
  private _watching(workerId: string): boolean {
    return (
      document.hasFocus() &&
      !!this.tracker.find(w => w.content.workerId === workerId && w.isVisible)
    );
  }

  private _notify(a: IAttention): void {
    if (this._watching(a.worker.id)) {
      return;
    }
    const text = `${a.session.name} / ${a.worker.name} is waiting for you`;
    const open = () => {
      void this.app.commands.execute(CommandIDs.openConsole, {
        sessionId: a.session.id,
        workerId: a.worker.id
      });
    };
    if (this.settings.inAppNotifications) {
      const now = Date.now();
      this._recent = this._recent.filter(t => now - t < NOTICE_MS);
      if (this._recent.length < NOTICES_SHOWN) {
        const id = Notification.warning(text, {
          autoClose: NOTICE_MS,
          actions: [{ label: 'Open console', callback: open }]
        });
        this._notices.set(a.worker.id, id);
        this._recent.push(now);
      } else {
        // Many agents asking at once: one notice counts the others, not a wall of toasts.
        this._grouped.add(a.worker.id);
        this._showGrouped();
      }
    }
    const N = (window as any).Notification;
    if (this.settings.browserNotifications && N && N.permission === 'granted') {
      try {
        const n = new N('An agent needs you', {
          body: text,
          tag: `mas-${a.worker.id}`
        });
        n.onclick = () => {
          window.focus();
          open();
        };
      } catch (err) {
        // Some browsers only allow notifications from a service worker.
        console.warn('mas_jupyter: browser notification failed', err);
      }
    }
  }

  /** Take back the notices of agents that no longer wait (answered, exited, deleted). */
  private _dismissAnswered(): void {
    if (!this._notices.size && !this._grouped.size) {
      return;
    }
    const waiting = new Set(this.model.waiting().map(a => a.worker.id));
    for (const [workerId, id] of [...this._notices]) {
      if (!waiting.has(workerId)) {
        Notification.dismiss(id);
        this._notices.delete(workerId);
      }
    }
    const before = this._grouped.size;
    for (const workerId of [...this._grouped]) {
      if (!waiting.has(workerId)) {
        this._grouped.delete(workerId);
      }
    }
    if (this._grouped.size !== before) {
      this._showGrouped(false);
    }
  }

  /**
   * The notice that counts the waiting agents without one of their own: shown again (a new
   * toast) when one more asks, its count corrected quietly as they are answered, gone when
   * none is left.
   */
  private _showGrouped(more = true): void {
    const n = this._grouped.size;
    const message = `${n} more agent${n === 1 ? ' is' : 's are'} waiting for you: see the Agents panel`;
    const actions = [{ label: 'Show agents', callback: () => this.app.shell.activateById(this.panel.id) }];
    if (this._groupedId !== null && n && !more) {
      Notification.update({ id: this._groupedId, message, type: 'warning', autoClose: NOTICE_MS, actions });
      return;
    }
    if (this._groupedId !== null) {
      Notification.dismiss(this._groupedId);
      this._groupedId = null;
    }
    if (n) {
      this._groupedId = Notification.warning(message, { autoClose: NOTICE_MS, actions });
    }
  }

  private _onSocketState(state: string, failures: number): void {
    if (state === 'open') {
      this.panel.setConnection(null);
    } else if (state === 'closed' && failures > 0) {
      this.panel.setConnection(
        failures > 1
          ? 'Not connected to the server: live updates paused, reconnecting…'
          : 'Connection to the server lost: reconnecting…',
        true
      );
    }
  }

  private _scheduleRefresh(): void {
    if (this._refreshTimer !== null) {
      clearInterval(this._refreshTimer);
      this._refreshTimer = null;
    }
    const seconds = this.settings.refreshInterval;
    if (seconds > 0) {
      // A safety net only: events keep the list current.
      this._refreshTimer = window.setInterval(() => {
        if (this.socket.state === 'open' && !document.hidden) {
          void this.refresh();
        }
      }, seconds * 1000);
    }
  }

  /** The session named by a command's args, or one the user picks. */
  private async _pickSession(
    args: any,
    title: string,
    filter: (s: ISession) => boolean = () => true
  ): Promise<ISession | null> {
    const sid = args?.sessionId as string | undefined;
    if (sid) {
      const s = this.model.get(sid);
      if (s) {
        return s;
      }
      try {
        return await this.client.getSession(sid);
      } catch (err) {
        await showErrorMessage(title, describeError(err));
        return null;
      }
    }
    const choices = this.model.sessions.filter(filter).sort((a, b) => a.name.localeCompare(b.name));
    if (!choices.length) {
      await showDialog({
        title,
        body: 'There is no session this applies to.',
        buttons: [Dialog.okButton()]
      });
      return null;
    }
    const result = await InputDialog.getItem({
      title,
      label: 'Session',
      items: choices.map(s => s.name)
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    return this.model.get(result.value) ?? null;
  }

  /** Run a server call, reporting failure in words. */
  private async _call<T>(title: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (err) {
      await showErrorMessage(title, describeError(err));
      return undefined;
    }
  }

  /**
   * Ask for a text until the server takes it: a refusal of the text (400: too long, ...;
   * 409: a name in use) is shown, then the dialog comes back with what was typed, so nothing
   * typed is lost; any other failure (the session is gone, no server) is shown and ends it.
   * `apply` answers null when there is nothing to do; Cancel leaves.
   */
  private async _askUntilTaken(
    options: InputDialog.ITextOptions,
    errorTitle: string,
    apply: (value: string) => Promise<unknown> | null
  ): Promise<void> {
    for (let text = options.text; ; ) {
      const result = await InputDialog.getText({ ...options, text });
      const pending = result.button.accept ? apply(result.value ?? '') : null;
      if (!pending) {
        return;
      }
      try {
        await pending;
        return;
      } catch (err) {
        await showErrorMessage(errorTitle, describeError(err));
        if (!(err instanceof MasApiError && (err.status === 400 || err.status === 409))) {
          return;
        }
        text = result.value ?? '';
      }
    }
  }

  private async _catalog(): Promise<ICatalog> {
    const [backends, personas, templates] = await Promise.all([
      this.client.backends(),
      this.client.personas(),
      this.client.templates()
    ]);
    const tasks = Array.from(
      new Set(this.model.sessions.map(s => s.task).filter((t): t is string => !!t))
    ).sort();
    return { backends, personas, templates, tasks };
  }

  /** Open (or reveal) the console of one worker. */
  openConsole(sessionId: string, workerId: string, activate = true): ConsoleWidget {
    const id = ConsoleWidget.idFor(sessionId, workerId);
    let widget = this.tracker.find(w => w.id === id);
    if (!widget) {
      const s = this.model.get(sessionId);
      const w = this.model.worker(sessionId, workerId);
      // Consoles are keyed by ids so a rename does not orphan a restored tab.
      const sid = s?.id ?? sessionId;
      const wid = w?.id ?? workerId;
      widget = this.tracker.find(x => x.id === ConsoleWidget.idFor(sid, wid));
      if (!widget) {
        widget = new ConsoleWidget({
          client: this.client,
          sessionId: sid,
          workerId: wid,
          sessionName: s?.name,
          workerName: w?.name,
          lookup: () => this.model.worker(sid, wid),
          lookupSession: () => this.model.get(sid),
          isGone: () => this.model.loaded && !this.model.worker(sid, wid)
        });
        const before = this.tracker.size;
        void this.tracker.add(widget);
        // The second console opens beside the first; more open as tabs next to the last
        // one, so the consoles never get narrower than half the main area.
        const last = this._lastConsole;
        let options: any = {};
        if (last && !last.isDisposed && last.isAttached) {
          options = { ref: last.id, mode: before === 1 ? 'split-right' : 'tab-after' };
        }
        this.app.shell.add(widget, 'main', options);
        // Known to be gone already (an old notification, a stale palette entry): say so.
        if (this.model.loaded) {
          widget.content.syncWithModel();
        }
        this._lastConsole = widget;
        widget.disposed.connect(() => {
          if (this._lastConsole === widget) {
            this._lastConsole = null;
          }
        });
      }
    }
    if (activate) {
      this.app.shell.activateById(widget.id);
    }
    return widget;
  }

  addCommands(palette: ICommandPalette | null): void {
    const { commands } = this.app;
    const label = (text: string) => (args: any) => (args?.sessionId ? text : `${text}…`);

    commands.addCommand(CommandIDs.showPanel, {
      label: 'Show Agent Sessions',
      caption: 'Show the agent sessions side panel',
      icon: masIcon,
      execute: () => {
        this.app.shell.activateById(this.panel.id);
      }
    });

    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Agent Sessions',
      execute: async () => {
        this.socket.reconnectNow();
        await this.refresh();
      }
    });

    commands.addCommand(CommandIDs.newSession, {
      label: 'New Agent Session…',
      caption: 'Create a session with a workspace and a first agent',
      execute: async () => {
        let catalog: ICatalog;
        try {
          catalog = await this._catalog();
        } catch (err) {
          await showErrorMessage('New session', describeError(err));
          return;
        }
        let initial: ISessionSpec | null = null;
        let refused: string | null = null; // the field a refusal was about
        // On a refused request the dialog comes back with what was typed.
        for (;;) {
          const result: Dialog.IResult<ISessionSpec> = await showDialog({
            title: 'New agent session',
            body: new NewSessionForm(catalog, initial),
            buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Create' })],
            // The cursor goes to the field a refusal was about, else to the name.
            focusNodeSelector: `[name="${refused ?? 'name'}"]`
          });
          if (!result.button.accept || !result.value) {
            return;
          }
          initial = result.value;
          try {
            const s = await this.client.createSession(result.value);
            this._changed(this.model.apply({ type: 'session-created', session_id: s.id, session: s }));
            this.app.shell.activateById(this.panel.id);
            return s;
          } catch (err) {
            await showErrorMessage(
              'The session was not created',
              describeError(err, SESSION_FIELD_LABELS)
            );
            refused = refusedField(err, SESSION_FIELD_LABELS);
          }
        }
      }
    });

    commands.addCommand(CommandIDs.addWorker, {
      label: label('Add Worker'),
      caption: 'Start another agent or a terminal in a session',
      // The server adds workers to active sessions only: a paused one is resumed first.
      isEnabled: args => this._statusIs(args, ['active']),
      execute: async args => {
        const s = await this._pickSession(args, 'Add a worker', x => x.status === 'active');
        if (!s) {
          return;
        }
        let catalog: ICatalog;
        try {
          catalog = await this._catalog();
        } catch (err) {
          await showErrorMessage('Add a worker', describeError(err));
          return;
        }
        let initial: IWorkerSpec | null = null;
        for (;;) {
          const result: Dialog.IResult<IWorkerSpec | null> = await showDialog({
            title: `Add a worker to ${s.name}`,
            body: new AddWorkerForm(catalog, initial),
            buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Add' })]
          });
          if (!result.button.accept || !result.value) {
            return;
          }
          initial = result.value;
          try {
            const w = await this.client.addWorker(s.id, result.value);
            return w;
          } catch (err) {
            await showErrorMessage('The worker was not added', describeError(err));
          }
        }
      }
    });

    commands.addCommand(CommandIDs.pause, {
      label: label('Pause Session'),
      caption: 'Stop the processes, keep the workspace and the agents’ conversations',
      isEnabled: args => this._statusIs(args, ['active']),
      execute: async args => {
        const s = await this._pickSession(args, 'Pause a session', x => x.status === 'active');
        if (s) {
          await this._call(`Could not pause ${s.name}`, () => this.client.pauseSession(s.id));
        }
      }
    });

    commands.addCommand(CommandIDs.resume, {
      label: label('Resume Session'),
      isEnabled: args => this._statusIs(args, ['paused']),
      execute: async args => {
        const s = await this._pickSession(args, 'Resume a session', x => x.status === 'paused');
        if (s) {
          await this._call(`Could not resume ${s.name}`, () => this.client.resumeSession(s.id));
        }
      }
    });

    commands.addCommand(CommandIDs.stop, {
      label: label('Stop Session'),
      caption: 'End the session’s processes; the workspace is kept',
      isEnabled: args => this._statusIs(args, ['active', 'paused']),
      execute: async args => {
        const s = await this._pickSession(args, 'Stop a session', x => x.status !== 'stopped');
        if (!s) {
          return;
        }
        const stopped = (result: (ISession & { warnings?: string[] }) | undefined) => {
          // A stop that went through can still come with things the user should know.
          const warnings = result?.warnings ?? [];
          if (warnings.length) {
            Notification.warning(`${s.name} stopped. ${warnings.join('; ')}`, { autoClose: 10000 });
          }
        };
        try {
          stopped(await this.client.stopSession(s.id, false));
        } catch (err) {
          if (err instanceof MasApiError && err.status === 409 && err.reason === 'stop_refused') {
            if (await confirmForcedStop(s.name, err)) {
              stopped(await this._call(`Could not stop ${s.name}`, () => this.client.stopSession(s.id, true)));
            }
            return;
          }
          await showErrorMessage(`Could not stop ${s.name}`, describeError(err));
        }
      }
    });

    commands.addCommand(CommandIDs.remove, {
      label: label('Delete Session'),
      caption: 'Stop everything and forget the session',
      execute: async args => {
        const s = await this._pickSession(args, 'Delete a session');
        if (!s) {
          return;
        }
        const result = await showDialog({
          title: `Delete ${s.name}?`,
          body: `Its processes are ended and it leaves the list. The workspace ${s.workspace} is kept unless you tick the box.`,
          checkbox: {
            label: s.kind === 'worktree' ? 'Also remove the worktree and its files' : 'Also remove the workspace files',
            checked: false
          },
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
        });
        if (!result.button.accept) {
          return;
        }
        const purge = !!result.isChecked;
        const title = `Could not delete ${s.name}`;
        let rescue: string | null | undefined;
        try {
          rescue = await this.client.deleteSession(s.id, purge);
        } catch (err) {
          // A purge that `force` would do (a changed worktree): ask, as a refused stop does.
          if (!(err instanceof MasApiError && err.status === 409 && err.body.field === 'force')) {
            await showErrorMessage(title, describeError(err));
            return;
          }
          if (!(await confirmForcedDelete(s.name, err))) {
            return;
          }
          rescue = await this._call(title, () => this.client.deleteSession(s.id, purge, true));
          if (rescue === undefined) {
            return;
          }
        }
        this._changed(this.model.apply({ type: 'session-deleted', session_id: s.id }));
        if (rescue) {
          Notification.info(
            `${s.name} deleted. Its worktree's changes are saved on ${rescue} in ${s.repo} ` +
              `(git show ${rescue}).`,
            { autoClose: false }
          );
        }
      }
    });

    commands.addCommand(CommandIDs.rename, {
      label: label('Rename Session'),
      execute: async args => {
        const s = await this._pickSession(args, 'Rename a session');
        if (!s) {
          return;
        }
        await this._askUntilTaken(
          { title: `Rename ${s.name}`, text: s.name, label: 'New name' },
          `Could not rename ${s.name}`,
          value => {
            const name = value.trim();
            return name && name !== s.name ? this.client.updateSession(s.id, { name }) : null;
          }
        );
      }
    });

    commands.addCommand(CommandIDs.setTask, {
      label: label('Set Session Task'),
      caption: 'Group the session under a task (e.g. a ticket id); empty removes it',
      execute: async args => {
        const s = await this._pickSession(args, 'Set the task of a session');
        if (!s) {
          return;
        }
        await this._askUntilTaken(
          { title: `Task of ${s.name}`, text: s.task ?? '', label: 'Task (empty for none)', placeholder: 'e.g. JIRA-123' },
          `Could not set the task of ${s.name}`,
          value => this.client.updateSession(s.id, { task: value.trim() || null })
        );
      }
    });

    commands.addCommand(CommandIDs.openWorkspace, {
      label: label('Open Session Workspace'),
      caption: 'Show the session’s folder in the file browser',
      execute: async args => {
        const s = await this._pickSession(args, 'Open a workspace');
        if (!s) {
          return;
        }
        const path = s.workspace_path;
        if (path === null || path === undefined || !commands.hasCommand('filebrowser:go-to-path')) {
          await showDialog({
            title: `Workspace of ${s.name}`,
            body: `${s.workspace}\n\nThis folder is outside the folder Jupyter serves, so the file browser cannot show it.`,
            buttons: [Dialog.okButton()]
          });
          return;
        }
        await commands.execute('filebrowser:go-to-path', { path: '/' + path.replace(/^\/+/, '') });
      }
    });

    commands.addCommand(CommandIDs.openConsole, {
      label: args => (args?.workerId ? 'Open Console' : 'Open Worker Console…'),
      caption: 'Open the terminal of a worker in a tab',
      execute: async args => {
        let sid = args?.sessionId as string | undefined;
        let wid = args?.workerId as string | undefined;
        if (!sid || !wid) {
          const choices: { label: string; sid: string; wid: string }[] = [];
          for (const s of this.model.sessions) {
            for (const w of s.workers) {
              choices.push({ label: `${s.name} / ${w.name}`, sid: s.id, wid: w.id });
            }
          }
          if (!choices.length) {
            await showDialog({ title: 'Open a console', body: 'No session has a worker yet.', buttons: [Dialog.okButton()] });
            return;
          }
          choices.sort((a, b) => a.label.localeCompare(b.label));
          const result = await InputDialog.getItem({ title: 'Open a console', label: 'Worker', items: choices.map(c => c.label) });
          const pick = choices.find(c => c.label === result.value);
          if (!result.button.accept || !pick) {
            return;
          }
          sid = pick.sid;
          wid = pick.wid;
        }
        return this.openConsole(sid, wid, args?.activate !== false);
      }
    });

    commands.addCommand(CommandIDs.restartWorker, {
      label: 'Restart Worker',
      caption: 'Start the worker again; agents continue their conversation',
      execute: async args => {
        const sid = args?.sessionId as string;
        const wid = args?.workerId as string;
        if (!sid || !wid) {
          return;
        }
        const open = this.tracker.find(w => w.content.sessionId === sid && w.content.workerId === wid);
        if (open) {
          await open.content.restart();
        } else {
          await this._call('Could not restart the worker', () => this.client.restartWorker(sid, wid));
        }
      }
    });

    commands.addCommand(CommandIDs.removeWorker, {
      label: 'Remove Worker',
      caption: 'End the worker’s process and remove it from the session',
      execute: async args => {
        const sid = args?.sessionId as string;
        const wid = args?.workerId as string;
        const w = sid && wid ? this.model.worker(sid, wid) : undefined;
        if (!sid || !wid) {
          return;
        }
        const result = await showDialog({
          title: `Remove ${w?.name ?? 'the worker'}?`,
          body: 'Its process is ended. Its transcript stays in the workspace.',
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
        });
        if (result.button.accept) {
          await this._call('Could not remove the worker', () => this.client.removeWorker(sid, wid));
        }
      }
    });

    commands.addCommand(CommandIDs.enableNotifications, {
      label: 'Allow Browser Notifications for Agents',
      caption: 'Get a browser notification when an agent starts waiting for you',
      execute: async () => {
        const N = (window as any).Notification;
        if (!N) {
          await showErrorMessage('Notifications', 'This browser does not support notifications.');
          return;
        }
        const answer = await N.requestPermission();
        if (answer === 'denied') {
          await showErrorMessage(
            'Notifications',
            'The browser blocks notifications for this site. Allow them in the site settings, then try again.'
          );
        }
        this.panel.updateNotificationButton();
      }
    });

    if (palette) {
      for (const command of [
        CommandIDs.showPanel,
        CommandIDs.newSession,
        CommandIDs.addWorker,
        CommandIDs.openConsole,
        CommandIDs.pause,
        CommandIDs.resume,
        CommandIDs.stop,
        CommandIDs.remove,
        CommandIDs.rename,
        CommandIDs.setTask,
        CommandIDs.openWorkspace,
        CommandIDs.refresh,
        CommandIDs.enableNotifications
      ]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
  }

  private _statusIs(args: any, statuses: string[]): boolean {
    const sid = args?.sessionId as string | undefined;
    if (!sid) {
      return true;
    }
    const s = this.model.get(sid);
    return !s || statuses.includes(s.status);
  }

  private _buffer: IMasEvent[] = [];
  private _refreshing = false;
  private _refreshSeq = 0;
  private _refreshTimer: number | null = null;
  private _waitingShown = -1;
  private _notices = new Map<string, string>(); // worker id -> its "waiting for you" notice
  private _grouped = new Set<string>(); // waiting workers counted by the grouped notice
  private _groupedId: string | null = null;
  private _recent: number[] = []; // when the last notices were shown
  private _lastConsole: Widget | null = null;
}

export default plugin;
