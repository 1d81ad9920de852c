/**
 * The forms of the panel's actions: new session, add worker, and the stop
 * check's answer. Each returns plain values; the commands talk to the server.
 */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IBackend, IPersona, ISessionSpec, ITemplate, IWorkerSpec, MasApiError } from './api';

/** What the forms offer, as the server lists it. */
export interface ICatalog {
  backends: IBackend[];
  personas: IPersona[];
  templates: ITemplate[];
  tasks: string[];
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, v);
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function field(label: string, control: HTMLElement, help?: string): HTMLLabelElement {
  const row = el('label', { class: 'mas-Form-field' });
  row.append(el('span', { class: 'mas-Form-label' }, label), control);
  if (help) {
    row.append(el('span', { class: 'mas-Form-help' }, help));
  }
  return row;
}

function input(name: string, placeholder = '', value = ''): HTMLInputElement {
  const i = el('input', { class: 'jp-mod-styled', name, placeholder, type: 'text', autocomplete: 'off' });
  i.value = value;
  return i;
}

function select(name: string, options: { value: string; label: string; disabled?: boolean; title?: string }[], value?: string): HTMLSelectElement {
  const s = el('select', { class: 'jp-mod-styled', name });
  for (const o of options) {
    const opt = el('option', { value: o.value }, o.label);
    if (o.disabled) {
      opt.disabled = true;
      opt.classList.add('mas-mod-unavailable');
    }
    if (o.title) {
      opt.title = o.title;
    }
    s.append(opt);
  }
  if (value !== undefined && options.some(o => o.value === value && !o.disabled)) {
    s.value = value;
  }
  return s;
}

/** Backend choices: unavailable ones greyed out with the reason, not hidden. */
export function backendOptions(backends: IBackend[], kind: 'agent' | 'any' = 'any') {
  return backends
    .filter(b => kind === 'any' || b.kind !== 'terminal')
    .map(b => ({
      value: b.name,
      label: b.available ? `${b.name}${b.description ? ` — ${b.description}` : ''}` : `${b.name} — unavailable: ${b.reason || 'not installed'}`,
      disabled: !b.available,
      title: b.available ? b.description || b.name : b.reason || 'not available'
    }));
}

function personaOptions(personas: IPersona[]) {
  return [
    { value: '', label: 'No persona' },
    ...personas.map(p => ({ value: p.name, label: `${p.icon ? p.icon + ' ' : ''}${p.title || p.name}` }))
  ];
}

/** The worker part of a form: name, kind, backend, persona. */
class WorkerFields {
  constructor(catalog: ICatalog, initial: Partial<IWorkerSpec> | null, allowNone: boolean) {
    const firstAvailable = catalog.backends.find(b => b.available && b.kind !== 'terminal');
    const backendChoices = backendOptions(catalog.backends, 'agent');
    this.backend = select(
      'backend',
      allowNone ? [{ value: '', label: 'No agent' }, ...backendChoices] : backendChoices,
      initial?.backend ?? (initial === null && allowNone ? '' : firstAvailable?.name)
    );
    this.kind = select('worker-kind', [
      { value: 'agent', label: 'Agent' },
      { value: 'terminal', label: 'Terminal (a shell)' }
    ], initial?.kind ?? 'agent');
    this.persona = select('persona', personaOptions(catalog.personas), initial?.persona ?? '');
    this.name = input('worker-name', '', initial?.name ?? '');
    this.kind.addEventListener('change', () => this.sync());
    this.backend.addEventListener('change', () => this.sync());
  }

  readonly name: HTMLInputElement;
  readonly kind: HTMLSelectElement;
  readonly backend: HTMLSelectElement;
  readonly persona: HTMLSelectElement;
  rows: HTMLElement[] = [];

  sync(): void {
    const agent = this.kind.value === 'agent';
    this.backend.disabled = !agent;
    this.persona.disabled = !agent || !this.backend.value;
    // What the server names it when the name is left empty (or the next free `demo-2`, ...).
    const generated = agent ? this.backend.value || 'agent' : 'shell';
    this.name.placeholder = generated;
    this.name.title = `Empty: ${generated}, or ${generated}-2, ${generated}-3, … when taken`;
  }

  value(): IWorkerSpec | null {
    const kind = this.kind.value as 'agent' | 'terminal';
    if (kind === 'agent' && !this.backend.value) {
      return null;
    }
    // An empty name is left to the server, which picks a free one (demo, then demo-2, ...).
    const spec: IWorkerSpec = { kind };
    const name = this.name.value.trim();
    if (name) {
      spec.name = name;
    }
    if (kind === 'agent') {
      spec.backend = this.backend.value;
      if (this.persona.value) {
        spec.persona = this.persona.value;
      }
    }
    return spec;
  }
}

/** The new-session dialog's words for the request's fields (see `describeError`). */
export const SESSION_FIELD_LABELS: Record<string, string> = {
  name: 'Name',
  task: 'Task',
  template: 'Template',
  repo: 'Repository',
  branch: 'Branch',
  base: 'Base',
  path: 'Directory'
};

/** The body of the new-session dialog. */
export class NewSessionForm extends Widget implements Dialog.IBodyWidget<ISessionSpec> {
  constructor(catalog: ICatalog, initial: ISessionSpec | null = null) {
    super();
    this.addClass('mas-Form');
    this.addClass('mas-NewSessionForm');
    const f = this.node;
    this._name = input('name', 'generated if empty, e.g. session-004', initial?.name ?? '');
    this._kind = select('kind', [
      { value: 'quick', label: 'Quick: a new folder from a template' },
      { value: 'worktree', label: 'Worktree: a new git worktree and branch' },
      { value: 'dir', label: 'Directory: an existing folder, shared' }
    ], initial?.kind ?? 'quick');
    const templates = catalog.templates.length ? catalog.templates : [{ name: 'default' }];
    this._template = select('template', templates.map(t => ({ value: t.name, label: t.name })), initial?.template);
    this._repo = input('repo', 'path of a git repository', initial?.repo ?? '');
    this._branch = input('branch', 'mas/<name>', initial?.branch ?? '');
    this._base = input('base', 'HEAD', initial?.base ?? '');
    this._path = input('path', 'path of an existing directory', initial?.path ?? '');
    this._task = input('task', 'e.g. a ticket id (optional)', initial?.task ?? '');
    const list = el('datalist', { id: `mas-tasks-${Private.nextId++}` });
    for (const t of catalog.tasks) {
      list.append(el('option', { value: t }));
    }
    this._task.setAttribute('list', list.id);
    const initialWorker = initial ? initial.workers?.[0] ?? null : undefined;
    this._worker = new WorkerFields(catalog, initialWorker === undefined ? {} : initialWorker, true);

    this._quickRows = [field('Template', this._template)];
    this._worktreeRows = [
      field('Repository', this._repo, 'Relative to the server root, or an allowed absolute path.'),
      field('Branch', this._branch),
      field('Base', this._base, 'The ref the branch starts from.')
    ];
    this._dirRows = [field('Directory', this._path, 'Agents work in it directly: not isolated.')];

    const agent = el('fieldset', { class: 'mas-Form-group' });
    agent.append(
      el('legend', {}, 'First worker'),
      field('Kind', this._worker.kind),
      field('Backend', this._worker.backend),
      field('Persona', this._worker.persona),
      field('Name', this._worker.name)
    );
    f.append(
      field('Name', this._name),
      field('Kind', this._kind),
      ...this._quickRows,
      ...this._worktreeRows,
      ...this._dirRows,
      field('Task', this._task),
      list,
      agent
    );
    this._kind.addEventListener('change', () => this._sync());
    this._sync();
    this._worker.sync();
  }

  getValue(): ISessionSpec {
    const kind = this._kind.value as ISessionSpec['kind'];
    const spec: ISessionSpec = { kind };
    const set = (key: keyof ISessionSpec, v: string) => {
      if (v.trim()) {
        (spec as any)[key] = v.trim();
      }
    };
    set('name', this._name.value);
    set('task', this._task.value);
    if (kind === 'quick') {
      set('template', this._template.value);
    } else if (kind === 'worktree') {
      set('repo', this._repo.value);
      set('branch', this._branch.value);
      set('base', this._base.value);
    } else {
      set('path', this._path.value);
    }
    const worker = this._worker.value();
    if (worker) {
      spec.workers = [worker];
    }
    return spec;
  }

  protected onAfterAttach(): void {
    this._name.focus();
  }

  private _sync(): void {
    const kind = this._kind.value;
    this._quickRows.forEach(r => (r.hidden = kind !== 'quick'));
    this._worktreeRows.forEach(r => (r.hidden = kind !== 'worktree'));
    this._dirRows.forEach(r => (r.hidden = kind !== 'dir'));
  }

  private _name: HTMLInputElement;
  private _kind: HTMLSelectElement;
  private _template: HTMLSelectElement;
  private _repo: HTMLInputElement;
  private _branch: HTMLInputElement;
  private _base: HTMLInputElement;
  private _path: HTMLInputElement;
  private _task: HTMLInputElement;
  private _worker: WorkerFields;
  private _quickRows: HTMLElement[];
  private _worktreeRows: HTMLElement[];
  private _dirRows: HTMLElement[];
}

/** The body of the add-worker dialog. */
export class AddWorkerForm extends Widget implements Dialog.IBodyWidget<IWorkerSpec | null> {
  constructor(catalog: ICatalog, initial: IWorkerSpec | null = null) {
    super();
    this.addClass('mas-Form');
    this.addClass('mas-AddWorkerForm');
    this._worker = new WorkerFields(catalog, initial ?? {}, false);
    this.node.append(
      field('Kind', this._worker.kind),
      field('Backend', this._worker.backend),
      field('Persona', this._worker.persona),
      field('Name', this._worker.name, 'Unique in the session; generated when empty.')
    );
    this._worker.sync();
  }

  getValue(): IWorkerSpec | null {
    return this._worker.value();
  }

  private _worker: WorkerFields;
}

/** Ask whether to stop anyway after the server's stop check refused. */
export async function confirmForcedStop(name: string, err: MasApiError): Promise<boolean> {
  const body = el('div', { class: 'mas-StopCheck' });
  // The server's message repeats its first problem ("... was not stopped: agent 'x' is busy"):
  // with the problems listed below, it is said once.
  body.append(
    el('p', {}, err.errors.length ? `The session “${name}” was not stopped.` : `The session “${name}” was not stopped: ${err.message}`)
  );
  const list = (title: string, items: string[], cls: string) => {
    if (!items.length) {
      return;
    }
    body.append(el('p', { class: 'mas-StopCheck-title' }, title));
    const ul = el('ul', { class: cls });
    for (const item of items) {
      ul.append(el('li', {}, item));
    }
    body.append(ul);
  };
  list('Problems', err.errors, 'mas-StopCheck-errors');
  list('Warnings', err.warnings, 'mas-StopCheck-warnings');
  body.append(
    el('p', {}, 'Stopping anyway ends every process of the session now. The workspace is kept.')
  );
  const bodyWidget = new Widget({ node: body });
  const result = await showDialog({
    title: 'Stop the session anyway?',
    body: bodyWidget,
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop anyway' })]
  });
  return result.button.accept;
}

/**
 * Ask whether to purge a worktree anyway after the server refused it (409, field `force`):
 * its changes are saved on a rescue ref first, its ignored files deleted.
 */
export async function confirmForcedDelete(name: string, err: MasApiError): Promise<boolean> {
  const body = el('div', { class: 'mas-StopCheck' });
  body.append(el('p', {}, `The session “${name}” was not deleted: ${err.message}`));
  const changes: string[] = Array.isArray(err.body.changes) ? err.body.changes.map(String) : [];
  if (changes.length) {
    const ul = el('ul', { class: 'mas-StopCheck-errors' });
    for (const change of changes) {
      ul.append(el('li', {}, change));
    }
    body.append(ul);
  }
  body.append(
    el(
      'p',
      {},
      'Deleting anyway saves the changes on a rescue ref in the repository first; ' +
        'ignored files (marked !!) are deleted with the worktree.'
    )
  );
  const result = await showDialog({
    title: 'Delete the worktree anyway?',
    body: new Widget({ node: body }),
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete anyway' })]
  });
  return result.button.accept;
}

namespace Private {
  export let nextId = 0;
}
