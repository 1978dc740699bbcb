/**
 * uvkernel's start progress in JupyterLab 4 and Notebook 7.
 *
 * While a uvkernel kernel starts for an open notebook, the server publishes the start's progress as events
 * (schema SCHEMA_ID): the step under way, uv's counts, the elapsed time, then the end. This plugin shows them
 * in one notification per start: an in-progress toast with a progress bar and a clock, replaced at the end by
 * the timing summary or by the error's code and fix (its whole text one click away). Without uvkernel kernels
 * no such event arrives and the plugin does nothing.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Event } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

export const SCHEMA_ID = 'https://jupyter-uvkernel.invalid/events/kernel-start/v1';
const MAX_MESSAGE = 140; // JupyterLab cuts a notification's message there
const LOST_EVERY_MS = 2000; // after a start's end: how often to look for a notebook that lost its kernel's answer
const LOST_LOOKS = 90; // for 3 minutes: the server lists the session once the kernel has launched
// looks in a row with the session listed and the notebook without it: its answer would have come long before
// (the server answers right after it lists the session), even on a loaded server
const LOST_AFTER = 3;
const RECONNECTED = "uvkernel: the page lost the server's answer to the kernel start; connected to the kernel the server started";

interface IStartEvent {
  kernel_id: string;
  kernel_name?: string;
  path: string;
  state: 'start' | 'progress' | 'ready' | 'error';
  phase: string;
  step: string;
  elapsed: number;
  counts?: { [key: string]: number };
  summary?: string;
  code?: string;
  message?: string;
  fix?: string;
}

// how far along a start is, roughly: its phases in order; uv's counts move the bar inside "installing"
const PHASES: { [phase: string]: number } = {
  'finding the project': 0.03,
  'preparing the env': 0.08,
  'waiting for another start': 0.1,
  'creating the env': 0.12,
  resolving: 0.25,
  downloading: 0.4,
  building: 0.5,
  installing: 0.6,
  removing: 0.8,
  'checking the host stack': 0.9,
  ready: 1,
  failed: 1
};

function clock(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function fraction(event: IStartEvent): number {
  const base = PHASES[event.phase] ?? 0.5;
  const counts = event.counts || {};
  if (event.phase === 'installing' && counts.resolved && counts.installed !== undefined) {
    return Math.min(0.88, base + 0.28 * Math.min(1, counts.installed / counts.resolved));
  }
  return base;
}

function countsText(counts: { [key: string]: number } | undefined): string {
  const shown = ['resolved', 'downloaded', 'built', 'prepared', 'installed']
    .filter(key => counts && counts[key] !== undefined)
    .map(key => `${key} ${counts![key]}`);
  return shown.length ? ` (${shown.join(', ')})` : '';
}

function fit(text: string, room: number): string {
  return text.length <= room ? text : text.slice(0, Math.max(0, room - 1)) + '…';
}

/** One start's notification, kept up to date until the start ends. */
class StartToast {
  private id = '';
  private last: IStartEvent | null = null;
  private receivedAt = 0;
  private timer = 0;

  update(event: IStartEvent): void {
    this.last = event;
    this.receivedAt = Date.now();
    if (event.state === 'ready') {
      this.stop();
      this.replace(
        fit(`uvkernel: ${event.summary || 'env ready'}`, MAX_MESSAGE),
        'success',
        { autoClose: 8000 }
      );
      return;
    }
    if (event.state === 'error') {
      this.stop();
      const head = `uvkernel [${event.code}]: ${event.step}`;
      this.replace(fit(head, MAX_MESSAGE), 'error', {
        autoClose: false,
        actions: [
          {
            label: 'Show the fix',
            caption: event.fix || '',
            callback: () => {
              void showDialog({
                title: `uvkernel could not start the kernel [${event.code}]`,
                body: Private.pre(event.message || event.step),
                buttons: [Dialog.okButton()]
              });
            }
          }
        ]
      });
      return;
    }
    this.render();
    if (!this.timer) {
      this.timer = window.setInterval(() => this.render(), 1000);
    }
  }

  private render(): void {
    const event = this.last;
    if (!event) {
      return;
    }
    const elapsed = event.elapsed + (Date.now() - this.receivedAt) / 1000;
    const tail = ` · ${clock(elapsed)}`;
    const counts = countsText(event.counts);
    const head = 'uvkernel: ';
    const step = fit(event.step + counts, MAX_MESSAGE - head.length - tail.length);
    this.show(head + step + tail, 'in-progress', { autoClose: false, progress: fraction(event) });
  }

  private show(message: string, type: Notification.TypeOptions, options: Notification.IOptions<any>): void {
    if (this.id) {
      Notification.update({ id: this.id, message, type, ...options });
    } else {
      this.id = Notification.emit(message, type, options);
    }
  }

  /** The end of a start as a notification of its own: the progress one is dismissed rather than updated, since an
   * update that changes the type and the auto-close of a toast on screen was seen to leave the old text showing. */
  private replace(message: string, type: Notification.TypeOptions, options: Notification.IOptions<any>): void {
    if (this.id) {
      Notification.dismiss(this.id);
    }
    this.id = Notification.emit(message, type, options);
  }

  stop(): void {
    if (this.timer) {
      window.clearInterval(this.timer);
      this.timer = 0;
    }
  }
}

namespace Private {
  export function pre(text: string): Widget {
    const body = document.createElement('pre');
    body.className = 'jp-uvkernel-error';
    body.textContent = text;
    return new Widget({ node: body });
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-uvkernel:start-progress',
  description: "Shows a uvkernel kernel start's progress: its steps, uv's counts, the elapsed time and the end.",
  autoStart: true,
  optional: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker | null) => {
    const toasts = new Map<string, StartToast>();

    // a start concerns this window when one of its open notebooks is that start's notebook or kernel
    const isOpen = (event: IStartEvent): boolean => {
      if (!tracker) {
        return true;
      }
      let found = false;
      tracker.forEach(panel => {
        const kernel = panel.sessionContext.session?.kernel;
        if (panel.context.path === event.path || (kernel && kernel.id === event.kernel_id)) {
          found = true;
        }
      });
      return found;
    };

    const panelFor = (path: string): NotebookPanel | null => {
      let found: NotebookPanel | null = null;
      tracker?.forEach(panel => {
        if (!found && panel.context.path === path) {
          found = panel;
        }
      });
      return found;
    };

    /** After a start's env is ready: a notebook left without the kernel that start made lost the server's
     * answer (a proxy in front of the server times out during a long first start: nginx answers 504 after 60 s
     * by default) while the server went on and started the kernel. Once the server lists that kernel's session
     * for the notebook, and the notebook still has no kernel LOST_AFTER looks in a row, it is connected to it, as
     * a reload of the page would do. */
    const reconnectIfLost = async (event: IStartEvent): Promise<void> => {
      if (!tracker || !event.kernel_id || !event.path) {
        return;
      }
      let lost = 0;
      for (let look = 0; look < LOST_LOOKS; look++) {
        await new Promise(done => window.setTimeout(done, LOST_EVERY_MS));
        const panel = panelFor(event.path);
        if (!panel || panel.isDisposed || panel.sessionContext.session?.kernel) {
          return; // closed, or it has a kernel (this one, or one the user chose)
        }
        await app.serviceManager.sessions.refreshRunning();
        // by its kernel: the server names a notebook's session by a path of its own ("folder/<uuid>")
        const listed = Array.from(app.serviceManager.sessions.running()).some(
          model => model.kernel?.id === event.kernel_id
        );
        lost = listed ? lost + 1 : 0;
        if (lost >= LOST_AFTER) {
          // POST /api/sessions for a notebook that has a session answers that session: this one, its kernel
          await panel.sessionContext.changeKernel({ id: event.kernel_id, name: event.kernel_name });
          Notification.info(fit(RECONNECTED, MAX_MESSAGE), { autoClose: 10000 });
          return;
        }
      }
    };

    app.serviceManager.events.stream.connect((_sender, emission: Event.Emission) => {
      if (emission.schema_id !== SCHEMA_ID) {
        return;
      }
      const event = emission as unknown as IStartEvent;
      const key = event.kernel_id || event.path;
      let toast = toasts.get(key);
      if (!toast) {
        if (!isOpen(event)) {
          return;
        }
        toast = new StartToast();
        toasts.set(key, toast);
      }
      toast.update(event);
      if (event.state === 'ready' || event.state === 'error') {
        toasts.delete(key);
      }
      if (event.state === 'ready') {
        void reconnectIfLost(event).catch(reason => console.warn('uvkernel: reconnecting the notebook', reason));
      }
    });
  }
};

export default plugin;
