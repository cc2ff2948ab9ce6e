package app;

import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import jakarta.servlet.http.HttpSession;
import java.io.IOException;

/**
 * A minimal app for unstick's end-to-end tests. Its session handling is Tomcat's own,
 * unchanged: an in-memory HttpSession (StandardManager), cookie JSESSIONID=<id>.<jvmRoute>, and
 * changeSessionId() on login as Tomcat's authenticators do.
 *
 * POST /login (form user), POST /logout, GET /me -> {"user", "instance"}; GET /page answers
 * as /me but makes a session if there is none, as a JSP does by default. The user is the
 * session's, else the X-Auth-User header unstick injects (a real app would trust it in a
 * filter, a valve or Spring Security's RequestHeaderAuthenticationFilter).
 */
public class SessionServlet extends HttpServlet {
    private static final String USER = "user";

    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response)
            throws IOException {
        HttpSession session;
        switch (request.getServletPath()) {
            case "/me" -> session = request.getSession(false);
            // A page that makes a session for every visitor, as a JSP does by default.
            case "/page" -> session = request.getSession(true);
            default -> {
                response.sendError(HttpServletResponse.SC_NOT_FOUND);
                return;
            }
        }
        Object user = session == null ? null : session.getAttribute(USER);
        if (user == null) {
            // Trusted only because unstick removes every client copy of this header.
            user = request.getHeader("X-Auth-User");
        }
        answer(response, (String) user);
    }

    @Override
    protected void doPost(HttpServletRequest request, HttpServletResponse response)
            throws IOException {
        switch (request.getServletPath()) {
            case "/login" -> {
                String user = request.getParameter(USER);
                if (user == null || user.isEmpty()) {
                    response.sendError(HttpServletResponse.SC_BAD_REQUEST, "POST a form field user");
                    return;
                }
                HttpSession session = request.getSession(true);
                // Session-fixation protection: a new id for the logged-in session.
                request.changeSessionId();
                session.setAttribute(USER, user);
                answer(response, user);
            }
            case "/logout" -> {
                HttpSession session = request.getSession(false);
                if (session != null) {
                    session.invalidate();
                }
                answer(response, null);
            }
            default -> response.sendError(HttpServletResponse.SC_NOT_FOUND);
        }
    }

    private static void answer(HttpServletResponse response, String user) throws IOException {
        String instance = System.getProperty("app.instance", "?");
        response.setContentType("application/json");
        response.setCharacterEncoding("UTF-8");
        response.getWriter().write(
                "{\"user\": " + json(user) + ", \"instance\": " + json(instance) + "}");
    }

    private static String json(String text) {
        if (text == null) {
            return "null";
        }
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }
}
