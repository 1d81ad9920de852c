/**
 * The left side panel: sessions grouped by task, their workers and activity.
 * Plain DOM with one element per session, redrawn only when that session
 * changed, so an event costs one row however many sessions there are.
 */

import {
  addIcon,
  ellipsesIcon,
  LabIcon,
  pauseIcon,
  refreshIcon,
  runIcon,
  stopIcon,
  bellIcon,
  terminalIcon
} from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Menu, Widget } from '@lumino/widgets';

import { agentIcon } from './icons';
import { exitText, IChange, ISession, IWorker, SessionsModel } from './model';
import { CommandIDs } from './tokens';

export interface IPanelOptions {
  model: SessionsModel;
  commands: CommandRegistry;
}

const ACTIVITY_LABEL: Record<string, string> = {
  busy: 'busy',
  idle: 'idle',
  waiting: 'needs you',
  unknown: ''
};

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') {
      el.className = v;
    } else {
      el.setAttribute(k, v);
    }
  }
  for (const c of children) {
    el.append(c);
  }
  return el;
}

function iconButton(icon: LabIcon, action: string, title: string): HTMLButtonElement {
  const b = h('button', {
    class: 'mas-IconButton',
    'data-action': action,
    title,
    'aria-label': title,
    type: 'button'
  });
  b.append(icon.element({ tag: 'span', className: 'mas-IconButton-icon' }));
  return b;
}

/** The side panel widget. */
export class SessionsPanel extends Widget {
  constructor(options: IPanelOptions) {
    super();
    this.id = 'mas-sessions-panel';
    this.addClass('mas-Panel');
    this._model = options.model;
    this._commands = options.commands;

    const header = h('div', { class: 'mas-Panel-header' });
    header.append(h('span', { class: 'mas-Panel-title' }, 'Agent sessions'));
    const tools = h('span', { class: 'mas-Panel-tools' });
    this._bell = iconButton(bellIcon, 'notifications', 'Allow browser notifications when an agent needs you');
    tools.append(
      this._bell,
      iconButton(refreshIcon, 'refresh', 'Refresh the list of sessions'),
      iconButton(addIcon, 'new-session', 'New session…')
    );
    header.append(tools);
    this._status = h('div', { class: 'mas-Panel-status', role: 'status' });
    this._status.hidden = true;
    this._error = h('div', { class: 'mas-Panel-error', role: 'alert' });
    this._error.hidden = true;
    this._list = h('div', { class: 'mas-Panel-list' });
    this._empty = h(
      'div',
      { class: 'mas-Panel-empty' },
      h('p', {}, 'No sessions yet.'),
      h('p', {}, 'A session is a workspace where agents and terminals work side by side.'),
      h('button', { class: 'jp-mod-styled jp-mod-accept', 'data-action': 'new-session', type: 'button' }, 'New session…')
    );
    this._empty.hidden = true;
    this.node.append(header, this._status, this._error, this._empty, this._list);
    this.node.addEventListener('click', this);
    this.node.addEventListener('keydown', this);
    this.node.addEventListener('contextmenu', this);
    this.updateNotificationButton();
    this._setStatus('Loading sessions…');
  }

  /** Whether stopped sessions are listed. */
  get showStopped(): boolean {
    return this._showStopped;
  }

  set showStopped(value: boolean) {
    if (value !== this._showStopped) {
      this._showStopped = value;
      this.refreshAll();
    }
  }

  /** Draw what a model change touched (once the current task's events are applied). */
  apply(change: IChange): void {
    change.changed.forEach(id => this._dirty.add(id));
    this._structural = this._structural || change.structural;
    this._schedule();
  }

  /** Draw everything again. */
  refreshAll(): void {
    this._model.sessions.forEach(s => this._dirty.add(s.id));
    this._structural = true;
    this._schedule();
  }

  /** Show how the events connection is doing; null hides the line. */
  setConnection(text: string | null, retry = false): void {
    this._setStatus(text, retry);
  }

  /** Show an error in the panel until the next success (null clears it). */
  showError(text: string | null): void {
    this._error.textContent = '';
    this._error.hidden = !text;
    if (text) {
      const close = h('button', { class: 'mas-Panel-errorClose', 'data-action': 'dismiss-error', type: 'button', title: 'Dismiss' }, '×');
      this._error.append(h('span', {}, text), close);
    }
  }

  /** Show the bell only while notifications could still be allowed. */
  updateNotificationButton(): void {
    const N = (window as any).Notification;
    this._bell.hidden = !N || N.permission !== 'default';
  }

  /** Draw now instead of after the current task (e.g. when shown). */
  flush(): void {
    this._scheduled = false;
    this._render();
  }

  handleEvent(event: Event): void {
    switch (event.type) {
      case 'click':
        this._onClick(event as MouseEvent);
        break;
      case 'keydown':
        this._onKeyDown(event as KeyboardEvent);
        break;
      case 'contextmenu':
        this._onContextMenu(event as MouseEvent);
        break;
    }
  }

  protected onAfterShow(): void {
    this.flush();
  }

  private _schedule(): void {
    if (this._scheduled) {
      return;
    }
    // Draw right after the events of this task are applied: the DOM is current before
    // the next frame paints, and a burst within one task is drawn once.
    this._scheduled = true;
    queueMicrotask(() => {
      if (this._scheduled) {
        this._scheduled = false;
        this._render();
      }
    });
  }

  private _render(): void {
    if (!this._model.loaded) {
      return;
    }
    if (this._loading) {
      this._loading = false;
      this._setStatus(null);
    }
    // Rows are rebuilt and moved: keyboard focus inside one is put back where it was.
    const focus = this._focusedPlace();
    try {
      this._draw();
    } finally {
      if (focus) {
        this._restoreFocus(focus);
      }
    }
  }

  private _draw(): void {
    for (const id of this._dirty) {
      const s = this._model.get(id);
      const row = this._rows.get(id);
      if (!s) {
        row?.remove();
        this._rows.delete(id);
        continue;
      }
      if (row) {
        this._fillRow(row, s);
      } else {
        const el = h('div', { class: 'mas-Session' });
        this._fillRow(el, s);
        this._rows.set(id, el);
      }
    }
    this._dirty.clear();
    if (this._structural) {
      this._structural = false;
      this._arrange();
    }
  }

  /** Put the rows into their groups and order, moving only what is out of place. */
  private _arrange(): void {
    const groups = this._model.groups({ showStopped: this._showStopped });
    const seenGroups = new Set<string>();
    let prevGroup: Element | null = null;
    for (const g of groups) {
      const key = g.task === null ? '\u0000none' : g.task;
      seenGroups.add(key);
      let group = this._groups.get(key);
      if (!group) {
        group = h('section', { class: 'mas-Group' });
        group.dataset.task = g.task ?? '';
        const title = h('span', { class: 'mas-Group-title' }, g.task ?? 'No task');
        title.title = g.task ? `Task: ${g.task}` : 'Sessions without a task';
        group.append(
          h('div', { class: 'mas-Group-header' }, title, h('span', { class: 'mas-Badge' })),
          h('div', { class: 'mas-Group-body' })
        );
        this._groups.set(key, group);
      }
      const badge = group.querySelector('.mas-Badge')!;
      const count = String(g.sessions.length);
      if (badge.textContent !== count) {
        badge.textContent = count;
        badge.setAttribute('title', `${count} session${count === '1' ? '' : 's'}`);
      }
      const waiting = g.sessions.some(s => s.workers.some(w => w.activity === 'waiting' && w.status !== 'exited'));
      group.classList.toggle('mas-mod-waiting', waiting);
      const body = group.lastElementChild as HTMLElement;
      let prev: Element | null = null;
      for (const s of g.sessions) {
        const row = this._rows.get(s.id)!;
        const expected: Element | null = prev ? prev.nextElementSibling : body.firstElementChild;
        if (expected !== row) {
          body.insertBefore(row, expected);
        }
        prev = row;
      }
      // Whatever follows the last expected row belongs elsewhere now.
      while (prev ? prev.nextElementSibling : body.firstElementChild) {
        (prev ? prev.nextElementSibling : body.firstElementChild)!.remove();
      }
      const expectedGroup: Element | null = prevGroup ? prevGroup.nextElementSibling : this._list.firstElementChild;
      if (expectedGroup !== group) {
        this._list.insertBefore(group, expectedGroup);
      }
      prevGroup = group;
    }
    for (const [key, group] of this._groups) {
      if (!seenGroups.has(key)) {
        group.remove();
        this._groups.delete(key);
      }
    }
    // Waiting sessions also count in groups whose membership did not change.
    this._updateGroupAttention();
    this._empty.hidden = groups.length > 0;
  }

  /** Where the keyboard focus is in a session's row: the row, one of its actions, a worker. */
  private _focusedPlace(): { sid: string; key: string } | null {
    const active = document.activeElement as HTMLElement | null;
    if (!active || !this._list.contains(active)) {
      return null;
    }
    const sid = this._sessionOf(active);
    if (!sid) {
      return null;
    }
    if (active.dataset.workerId) {
      return { sid, key: `.mas-Worker[data-worker-id="${CSS.escape(active.dataset.workerId)}"]` };
    }
    if (active.dataset.action) {
      return { sid, key: `[data-action="${CSS.escape(active.dataset.action)}"]` };
    }
    return { sid, key: '.mas-Session-header' };
  }

  private _restoreFocus(place: { sid: string; key: string }): void {
    const active = document.activeElement;
    if (active && active !== document.body && active.isConnected) {
      return; // still focused, or the user moved on
    }
    const row = this._rows.get(place.sid);
    if (!row || !row.isConnected) {
      return;
    }
    const target = (row.querySelector(place.key) ?? row.querySelector('.mas-Session-header')) as HTMLElement | null;
    target?.focus({ preventScroll: true });
  }

  private _updateGroupAttention(): void {
    for (const group of this._groups.values()) {
      const waiting = group.querySelector('.mas-Worker[data-activity="waiting"]') !== null;
      group.classList.toggle('mas-mod-waiting', waiting);
    }
  }

  private _fillRow(row: HTMLElement, s: ISession): void {
    row.dataset.sessionId = s.id;
    row.dataset.status = s.status;
    const waiting = s.workers.some(w => w.activity === 'waiting' && w.status !== 'exited');
    row.classList.toggle('mas-mod-waiting', waiting);

    const name = h('span', { class: 'mas-Session-name' }, s.name);
    const detail: string[] = [s.kind];
    if (s.branch) {
      detail.push(s.branch);
    }
    name.title = `${s.name}\n${s.kind} session, ${s.status}\n${s.workspace}`;
    const status = h('span', { class: 'mas-Session-status', 'data-status': s.status }, s.status);
    const actions = h('span', { class: 'mas-Session-actions' });
    if (s.status === 'active') {
      // The server adds workers to active sessions only (a paused one is resumed first).
      actions.append(iconButton(addIcon, 'add-worker', 'Add a worker…'));
      actions.append(iconButton(pauseIcon, 'pause', 'Pause: stop the processes, keep the workspace'));
    } else if (s.status === 'paused') {
      actions.append(iconButton(runIcon, 'resume', 'Resume'));
    }
    if (s.status !== 'stopped') {
      actions.append(iconButton(stopIcon, 'stop', 'Stop this session'));
    }
    actions.append(iconButton(ellipsesIcon, 'more', 'More actions'));
    // Focusable, so the keyboard reaches the row's actions (they show while it has focus);
    // Enter or Space opens its menu.
    const header = h(
      'div',
      {
        class: 'mas-Session-header',
        tabindex: '0',
        role: 'group',
        'aria-label': `${s.name}, ${s.kind} session, ${s.status}: Enter for its actions`
      },
      h('span', { class: 'mas-StatusDot', 'data-status': s.status }),
      name,
      h('span', { class: 'mas-Session-kind' }, detail.join(' · ')),
      status,
      actions
    );
    const workers = h('ul', { class: 'mas-Workers' });
    for (const w of s.workers) {
      workers.append(this._workerItem(s, w));
    }
    row.replaceChildren(header, workers);
  }

  private _workerItem(s: ISession, w: IWorker): HTMLLIElement {
    const exited = w.status === 'exited';
    const activity = exited ? 'exited' : w.status === 'starting' ? 'starting' : w.activity || 'unknown';
    const li = h('li', {
      class: 'mas-Worker',
      tabindex: '0',
      role: 'button',
      'data-worker-id': w.id,
      'data-activity': activity,
      'data-status': w.status
    });
    const icon = h('span', { class: 'mas-Worker-icon', 'aria-hidden': 'true' });
    if (w.persona_icon) {
      icon.textContent = w.persona_icon;
    } else {
      icon.append((w.kind === 'terminal' ? terminalIcon : agentIcon).element({ tag: 'span' }));
    }
    const label = h('span', { class: 'mas-Worker-name' }, w.name);
    const meta = [w.kind === 'agent' ? w.backend : 'terminal'];
    if (w.persona) {
      meta.push(w.persona);
    }
    const backend = h('span', { class: 'mas-Worker-meta' }, meta.join(' · '));
    const text = exited ? exitText(w) : w.status === 'starting' ? 'starting' : ACTIVITY_LABEL[activity] ?? activity;
    const badge = h('span', { class: 'mas-Activity', 'data-activity': activity }, h('span', { class: 'mas-Activity-dot' }), text);
    li.append(icon, label, backend, badge);
    li.title = `Open the console of ${w.name} (${meta.join(', ')})${exited && w.exit_reason ? `\n${w.exit_reason}` : ''}`;
    return li;
  }

  private _setStatus(text: string | null, retry = false): void {
    this._status.textContent = '';
    this._status.hidden = !text;
    if (text) {
      this._status.append(h('span', {}, text));
      if (retry) {
        this._status.append(h('button', { class: 'mas-LinkButton', 'data-action': 'reconnect', type: 'button' }, 'Retry now'));
      }
    }
  }

  private _sessionOf(target: Element): string | null {
    const row = target.closest('.mas-Session') as HTMLElement | null;
    return row?.dataset.sessionId ?? null;
  }

  private _onClick(event: MouseEvent): void {
    const target = event.target as Element;
    const button = target.closest('[data-action]') as HTMLElement | null;
    if (button) {
      event.stopPropagation();
      this._runAction(button.dataset.action!, this._sessionOf(button), button, event.detail === 0);
      return;
    }
    const worker = target.closest('.mas-Worker') as HTMLElement | null;
    const sid = this._sessionOf(target);
    if (worker && sid) {
      void this._commands.execute(CommandIDs.openConsole, { sessionId: sid, workerId: worker.dataset.workerId! });
    }
  }

  private _onKeyDown(event: KeyboardEvent): void {
    const target = event.target as HTMLElement;
    // (The menu key and Shift+F10 come as a contextmenu event, like a right-click.)
    if (target.classList?.contains('mas-Session-header') && (event.key === 'Enter' || event.key === ' ')) {
      const sid = this._sessionOf(target);
      if (sid) {
        event.preventDefault();
        event.stopPropagation();
        const rect = target.getBoundingClientRect();
        this._openMenu(sid, null, rect.left + 16, rect.bottom, true);
      }
      return;
    }
    if (event.key !== 'Enter' && event.key !== ' ') {
      return;
    }
    const worker = (event.target as Element).closest?.('.mas-Worker') as HTMLElement | null;
    const sid = worker ? this._sessionOf(worker) : null;
    if (worker && sid) {
      event.preventDefault();
      void this._commands.execute(CommandIDs.openConsole, { sessionId: sid, workerId: worker.dataset.workerId! });
    }
  }

  private _onContextMenu(event: MouseEvent): void {
    const target = event.target as Element;
    const sid = this._sessionOf(target);
    if (!sid) {
      return;
    }
    event.preventDefault();
    event.stopPropagation();
    const worker = target.closest('.mas-Worker') as HTMLElement | null;
    this._openMenu(sid, worker?.dataset.workerId ?? null, event.clientX, event.clientY);
  }

  private _runAction(action: string, sid: string | null, button: HTMLElement, fromKeyboard = false): void {
    const args = sid ? { sessionId: sid } : {};
    const run = (id: string) => void this._commands.execute(id, args);
    switch (action) {
      case 'new-session':
        run(CommandIDs.newSession);
        break;
      case 'refresh':
        run(CommandIDs.refresh);
        break;
      case 'reconnect':
        run(CommandIDs.refresh);
        break;
      case 'notifications':
        void this._commands.execute(CommandIDs.enableNotifications).then(() => this.updateNotificationButton());
        break;
      case 'dismiss-error':
        this.showError(null);
        break;
      case 'add-worker':
        run(CommandIDs.addWorker);
        break;
      case 'pause':
        run(CommandIDs.pause);
        break;
      case 'resume':
        run(CommandIDs.resume);
        break;
      case 'stop':
        run(CommandIDs.stop);
        break;
      case 'more': {
        const rect = button.getBoundingClientRect();
        if (sid) {
          this._openMenu(sid, null, rect.left, rect.bottom, fromKeyboard);
        }
        break;
      }
    }
  }

  private _openMenu(sid: string, wid: string | null, x: number, y: number, fromKeyboard = false): void {
    const menu = new Menu({ commands: this._commands });
    menu.addClass('mas-Menu');
    const args = { sessionId: sid };
    if (wid) {
      const wargs = { sessionId: sid, workerId: wid };
      menu.addItem({ command: CommandIDs.openConsole, args: wargs });
      menu.addItem({ command: CommandIDs.restartWorker, args: wargs });
      menu.addItem({ command: CommandIDs.removeWorker, args: wargs });
      menu.addItem({ type: 'separator' });
    }
    for (const id of [CommandIDs.rename, CommandIDs.setTask, CommandIDs.openWorkspace, CommandIDs.addWorker]) {
      menu.addItem({ command: id, args });
    }
    menu.addItem({ type: 'separator' });
    for (const id of [CommandIDs.pause, CommandIDs.resume, CommandIDs.stop, CommandIDs.remove]) {
      menu.addItem({ command: id, args });
    }
    menu.aboutToClose.connect(() => {
      // Opened from the keyboard: focus goes back to the row (a command's dialog takes it
      // next, and gives it back when it closes).
      if (fromKeyboard) {
        const header = this._rows.get(sid)?.querySelector('.mas-Session-header') as HTMLElement | null;
        header?.focus({ preventScroll: true });
      }
      setTimeout(() => menu.dispose(), 0);
    });
    menu.open(x, y);
  }

  private _model: SessionsModel;
  private _commands: CommandRegistry;
  private _list: HTMLElement;
  private _empty: HTMLElement;
  private _status: HTMLElement;
  private _error: HTMLElement;
  private _bell: HTMLButtonElement;
  private _rows = new Map<string, HTMLElement>();
  private _groups = new Map<string, HTMLElement>();
  private _dirty = new Set<string>();
  private _structural = false;
  private _scheduled = false;
  private _loading = true;
  private _showStopped = true;
}
