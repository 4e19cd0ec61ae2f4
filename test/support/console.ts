import { ADMIN_PASSWORD } from './stack.js';

/** A browser-less console client: keeps cookies, reads CSRF tokens out of forms. */
export class ConsoleClient {
  private jar = new Map<string, string>();

  constructor(
    readonly base: string,
    private readonly extraHeaders: Record<string, string> = {},
  ) {}

  get cookie(): string {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async request(path: string, init: RequestInit = {}): Promise<Response> {
    const response = await fetch(`${this.base}${path}`, {
      ...init,
      redirect: 'manual',
      headers: { ...this.extraHeaders, ...(this.jar.size ? { cookie: this.cookie } : {}), ...(init.headers as Record<string, string>) },
    });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const [name, value] = pair!.split('=');
      if (value === '') this.jar.delete(name!);
      else this.jar.set(name!, value!);
    }
    return response;
  }

  static csrfOf(html: string): string {
    return html.match(/name="_csrf" value="([^"]+)"/)?.[1] ?? '';
  }

  async post(path: string, fields: Record<string, string>, headers: Record<string, string> = {}): Promise<Response> {
    return this.request(path, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams(fields).toString(),
    });
  }

  async login(password = ADMIN_PASSWORD, headers: Record<string, string> = {}): Promise<Response> {
    const page = await this.request('/console/login', { headers });
    const csrf = ConsoleClient.csrfOf(await page.text());
    return this.post('/console/login', { _csrf: csrf, password }, headers);
  }
}
