import type { z } from 'zod';
import type { Pm2Process } from './pm2.js';

// What the doctor's checks return (doctor.ts, doctor-database.ts), and how they read web's environment.

/** `warning`: worth fixing, but the deployment works; it does not make the doctor exit 1. */
export type Finding = { id: string; ok: boolean; warning?: true; detail: string; fix?: string };

export const ok = (id: string, detail: string): Finding => ({ id, ok: true, detail });
export const fail = (id: string, detail: string, fix: string): Finding => ({ id, ok: false, detail, fix });
export const warn = (id: string, detail: string, fix: string): Finding => ({ id, ok: false, warning: true, detail, fix });

/** A process as `pm2 jlist` reports it, with the settings the checks read. */
export type Pm2App = Pm2Process & {
  pm2_env: Pm2Process['pm2_env'] & {
    exec_mode?: string;
    wait_ready?: boolean;
    listen_timeout?: number;
    kill_timeout?: number;
    args?: string[] | string;
    env?: Record<string, string>;
  } & Record<string, unknown>;
};

export function envOf(p: Pm2App, name: string): string | undefined {
  const value = p.pm2_env.env?.[name] ?? p.pm2_env[name];
  if (typeof value !== 'string' && typeof value !== 'number') return undefined;
  return String(value) || undefined;
}

/**
 * A value of web's environment read as the app reads it (config.ts), so the schema's default when
 * unset. An invalid value counts as unset: the app refuses to start on it, and instances-online says so.
 */
export function asConfig<S extends z.ZodType>(field: S, value: string | undefined): z.output<S> {
  const parsed = field.safeParse(value);
  return parsed.success ? parsed.data : field.parse(undefined);
}
